// Empty on purpose: an assembly file in the package lets fork.go declare
// the runtime's fork hooks without bodies (they are linked by name).
