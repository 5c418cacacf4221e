/* libcimgdep.so.1, needed by the module; it needs libcimgdep2.so.1 in
 * turn, so the closure has to go two levels deep. */
int dep2_answer(void);

int dep_answer(void) { return dep2_answer(); }
