/* The private library of the cross-build tests. */
int priv_answer(void) { return 42; }
