/* fuzz_deadline.c: fuzzes the engine's deadline arithmetic and seconds
 * options (csrc/deadline.h, compiled here exactly as the engine compiles it).
 *
 * Deterministic: first every boundary value against every boundary `now`
 * (0, -0.0, denormals, negatives, nan with any payload, inf, 1e19, DBL_MAX,
 * values around LONG_MAX seconds and around OFFLOAD_WAIT_MAX_S, fractions a
 * hair below a whole second...), then N random doubles drawn as raw 64-bit
 * patterns (every class of double) and as "sane" durations, against random
 * `now` values. Checked for each result:
 *   - 0 <= tv_nsec < 1e9 and the deadline never lies before `now`;
 *   - nan, negative and zero give exactly `now`; huge values saturate;
 *   - monotonic: a longer wait never gives an earlier deadline;
 *   - precise: a sane duration lands within 1 us of now + seconds;
 *   - nanosecond counts in [0, 1e18], monotonic; saturating additions;
 *   - the idle/join timeout options normalised into their ranges.
 * Built with -fsanitize=address,undefined,float-cast-overflow by `make
 * fuzz-deadline` (and `make test-sanitize`), and by tests/test_fuzz_deadline.py
 * in `make test`: an out-of-range float->int conversion (the old bug) aborts.
 *
 * Usage: fuzz_deadline [iterations] [seed]; fuzz_deadline --canary runs the
 * same checks on the engine's old arithmetic and must find a violation. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, as Python.h gives the engine */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"

static long long checks, failures;
static int canary_mode;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        checks++;                                                                             \
        if (!(cond)) {                                                                        \
            if (failures++ < 20) {                                                            \
                fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);               \
                fprintf(stderr, __VA_ARGS__);                                                 \
                fputc('\n', stderr);                                                          \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/* The engine's arithmetic before issue 10 (the canary: it must be caught).
 * Written so it doesn't trip the sanitizers itself: the cast is guarded the
 * way the hardware happened to behave (INT64_MIN), so the checks see it. */
static struct timespec
old_timespec_after(struct timespec now, double seconds)
{
    int64_t whole = (seconds >= -9.2e18 && seconds <= 9.2e18) ? (int64_t)seconds : INT64_MIN;
    struct timespec ts = now;
    ts.tv_sec = (time_t)((uint64_t)ts.tv_sec + (uint64_t)whole);
    double frac = seconds - (double)whole;
    ts.tv_nsec += (frac == frac && frac > -2e9 && frac < 2e9) ? (long)(frac * 1e9) : LONG_MIN / 2;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec = (time_t)((uint64_t)ts.tv_sec + 1);
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

static struct timespec
after(struct timespec now, double seconds)
{
    return canary_mode ? old_timespec_after(now, seconds) : offload_timespec_after(now, seconds);
}

static int
ts_cmp(struct timespec a, struct timespec b)
{
    if (a.tv_sec != b.tv_sec) {
        return a.tv_sec < b.tv_sec ? -1 : 1;
    }
    return a.tv_nsec < b.tv_nsec ? -1 : a.tv_nsec > b.tv_nsec;
}

/* xorshift64*: reproducible from the seed. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static double
raw_double(void)
{
    uint64_t bits = rng();
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static void
check_one(struct timespec now, double s)
{
    struct timespec r = after(now, s);
    CHECK(r.tv_nsec >= 0 && r.tv_nsec < OFFLOAD_NS_PER_S, "s=%a nsec=%ld", s, (long)r.tv_nsec);
    CHECK(ts_cmp(r, now) >= 0, "s=%a now=%lld.%09ld r=%lld.%09ld", s, (long long)now.tv_sec,
          (long)now.tv_nsec, (long long)r.tv_sec, (long)r.tv_nsec);
    if (!(s > 0)) { /* nan, -0.0, negative, 0 */
        CHECK(ts_cmp(r, now) == 0, "s=%a must mean 'now'", s);
    }
    if (s >= OFFLOAD_WAIT_MAX_S) { /* inf, 1e19, DBL_MAX: saturate */
        CHECK(ts_cmp(r, after(now, OFFLOAD_WAIT_MAX_S)) == 0, "s=%a must saturate", s);
    }
    if (s > 0 && s < 1e6 && now.tv_sec < (time_t)4e9) { /* sane: precise to 1 us */
        long double want = (long double)now.tv_sec + (long double)now.tv_nsec / 1e9L + s;
        long double got = (long double)r.tv_sec + (long double)r.tv_nsec / 1e9L;
        CHECK(fabsl(got - want) < 1e-6L, "s=%a off by %Lg s", s, got - want);
    }
    /* monotonic against a slightly longer and a slightly shorter wait */
    if (s == s) {
        double longer = nextafter(s, INFINITY), shorter = nextafter(s, -INFINITY);
        CHECK(ts_cmp(after(now, longer), r) >= 0, "s=%a: a longer wait ended earlier", s);
        CHECK(ts_cmp(after(now, shorter), r) <= 0, "s=%a: a shorter wait ended later", s);
    }
    if (canary_mode) {
        return;
    }
    int64_t ns = offload_seconds_to_ns(s);
    CHECK(ns >= 0 && ns <= (int64_t)1e18, "s=%a ns=%lld", s, (long long)ns);
    if (s == s) {
        CHECK(offload_seconds_to_ns(nextafter(s, INFINITY)) >= ns, "s=%a ns not monotonic", s);
    }
    double idle = offload_idle_seconds(s), wait = offload_wait_seconds(s);
    CHECK(idle >= 0.001 && idle <= OFFLOAD_WAIT_MAX_S, "idle(%a)=%a", s, idle);
    CHECK(wait >= 0 && wait <= OFFLOAD_WAIT_MAX_S, "wait(%a)=%a", s, wait);
    CHECK(s != s || s <= 0 || s >= OFFLOAD_WAIT_MAX_S || wait == s, "wait(%a)=%a", s, wait);
    int64_t a = (int64_t)(rng() >> 1), b = ns;
    int64_t sum = offload_ns_add(a, b);
    CHECK(sum >= a && sum >= b && (sum == INT64_MAX || sum - a == b), "ns_add overflow");
}

static const double boundary_seconds[] = {
    0.0, -0.0, 4.9406564584124654e-324 /* smallest denormal */, 2.2250738585072014e-308,
    -4.9406564584124654e-324, -1.0, -1e-9, -1e19, -DBL_MAX, -INFINITY, NAN, -NAN,
    INFINITY, 1e19, DBL_MAX, 1e-10, 0.5e-9, 1e-9, 1.5e-9, 0.001, 0.1, 0.5,
    0.9999999999, 0.99999999999999989 /* 1 - 2^-53 */, 1.0, 1.0000000000000002,
    1.9999999995, 2.9999999999, 30.0, 86400.0, 1e6, 1e9 - 0.5, 1e9 - 1e-7, 1e9,
    1e9 + 1.0, 2147483647.0, 2147483648.0, 4294967296.0, 9223372036854775807.0,
    9223372036854775808.0, 9.223372036854775e18, 1.8446744073709552e19, 1e300,
};

int
main(int argc, char **argv)
{
    long long iterations = 2000000;
    int argi = 1;
    if (argc > 1 && strcmp(argv[1], "--canary") == 0) {
        canary_mode = 1;
        iterations = 1000;
        argi = 2;
    }
    if (argc > argi) {
        iterations = atoll(argv[argi]);
    }
    if (argc > argi + 1) {
        rng_state = strtoull(argv[argi + 1], NULL, 0) | 1;
    }
    const time_t tmax = OFFLOAD_TIME_T_MAX;
    struct timespec nows[] = {
        {0, 0}, {0, 999999999}, {1764000000, 0}, {1764000000, 999999999},
        {1764000000, 500000000}, {(time_t)2147483647 - 10, 999999999},
        {tmax - (time_t)1e9, 999999999}, {tmax - 1, 999999999}, {tmax, 0}, {tmax, 999999999},
    };
    size_t n_now = sizeof(nows) / sizeof(nows[0]);
    size_t n_sec = sizeof(boundary_seconds) / sizeof(boundary_seconds[0]);
    for (size_t i = 0; i < n_now; i++) {
        for (size_t j = 0; j < n_sec; j++) {
            check_one(nows[i], boundary_seconds[j]);
        }
    }
    /* monotonic across the sorted boundary list, per now */
    for (size_t i = 0; i < n_now; i++) {
        for (size_t j = 0; j < n_sec; j++) {
            for (size_t k = 0; k < n_sec; k++) {
                double a = boundary_seconds[j], b = boundary_seconds[k];
                if (a == a && b == b && a <= b) {
                    CHECK(ts_cmp(after(nows[i], a), after(nows[i], b)) <= 0,
                          "monotonic: %a <= %a", a, b);
                }
            }
        }
    }
    for (long long n = 0; n < iterations; n++) {
        struct timespec now;
        uint64_t pick = rng();
        if (pick % 4 == 0) {
            now = nows[(pick >> 8) % n_now];
        }
        else {
            now.tv_sec = (time_t)(rng() % (uint64_t)4e9);
            now.tv_nsec = (long)(rng() % (uint64_t)OFFLOAD_NS_PER_S);
        }
        double s;
        switch ((pick >> 4) % 4) {
        case 0: s = raw_double(); break;                               /* any double */
        case 1: s = (double)(rng() % 100000) / 1000.0; break;          /* ms durations */
        case 2: s = ldexp((double)(rng() >> 11), (int)(rng() % 140) - 100); break; /* scales */
        default: s = boundary_seconds[(pick >> 8) % n_sec]; break;
        }
        check_one(now, s);
    }
    printf("%s: %lld checks, %lld failures (%lld random iterations)\n",
           canary_mode ? "canary (old arithmetic)" : "deadline fuzz", checks, failures, iterations);
    return failures ? 1 : 0;
}
