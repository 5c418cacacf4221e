/* libcimgdep2.so.1, the end of the module's chain. */
int dep2_answer(void) { return 42; }
