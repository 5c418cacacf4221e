/* An extension module: a shared object in an added tree that needs a
 * library of the sysroot (libcimgdep.so.1). */
int dep_answer(void);

int mod_answer(void) { return dep_answer(); }
