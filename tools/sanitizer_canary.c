/* Seeded bugs that tools/sanitize.sh runs before the suite, with the suite's runtime
 * options, to prove the sanitizer really reports in this setup (LD_PRELOAD, log_path,
 * suppressions, the report counting): a run that ends with "0 reports" means something
 * only if these are caught. Called through ctypes, which releases the GIL, so the two
 * threads of canary_race really overlap. Never linked into offload. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static volatile long canary_counter;

/* ThreadSanitizer: two threads run this at once, unsynchronized. */
void canary_race(long n) {
    for (long i = 0; i < n; i++) {
        canary_counter++;
    }
}

/* AddressSanitizer: a heap-buffer-overflow (writes n bytes into 8). */
int canary_overflow(int n) {
    char *p = malloc(8);
    memset(p, 1, (size_t)n);
    int r = p[0];
    free(p);
    return r;
}

/* UndefinedBehaviorSanitizer: signed integer overflow. */
int canary_ubsan(int x) {
    return x + INT_MAX;
}
