package launcher

// lastCap is the highest capability number this code knows; higher ones
// the running kernel may have are dropped from the bounding set too
// (the child ignores EINVAL for numbers the kernel does not have).
const lastCap = 63
