/* deadline.h: the one place where a double of seconds becomes a wait: an
 * absolute timespec for pthread_cond_timedwait, a count of nanoseconds, and
 * the engine's seconds options normalised. Plain C11 (no Python.h), so the
 * engine and the fuzz harness (tests/c/fuzz_deadline.c) compile the same code.
 *
 * Every input is accepted and saturates, never overflows:
 *   nan, -0.0, negative, denormals  -> 0 s (an immediate deadline);
 *   inf, 1e19, DBL_MAX, anything over OFFLOAD_WAIT_MAX_S -> OFFLOAD_WAIT_MAX_S
 *   (about 31.7 years: "no deadline" for every purpose, and a value every
 *   pthread implementation takes);
 *   a sum past the largest time_t -> the largest time_t, 999999999 ns.
 * Results always have 0 <= tv_nsec < 1e9 and never lie before `now`. */
#ifndef OFFLOAD_DEADLINE_H
#define OFFLOAD_DEADLINE_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define OFFLOAD_NS_PER_S 1000000000L
/* The longest wait the engine ever computes, in seconds (inf saturates here). */
#define OFFLOAD_WAIT_MAX_S 1e9
/* time_t is signed; its largest value without assuming its width. */
#define OFFLOAD_TIME_T_MAX                                                                    \
    ((time_t)(sizeof(time_t) == 8 ? (time_t)INT64_MAX : (time_t)INT32_MAX))

/* Seconds clamped to [0, OFFLOAD_WAIT_MAX_S]; nan and negatives give 0. */
static inline double
offload_clamp_seconds(double seconds)
{
    if (!(seconds > 0.0)) { /* nan, -0.0, negative */
        return 0.0;
    }
    return seconds < OFFLOAD_WAIT_MAX_S ? seconds : OFFLOAD_WAIT_MAX_S;
}

/* Nanoseconds in `seconds` (clamped as above; at most 1e18, so no overflow). */
static inline int64_t
offload_seconds_to_ns(double seconds)
{
    return (int64_t)(offload_clamp_seconds(seconds) * 1e9);
}

/* a + b for non-negative nanosecond counts, saturating at INT64_MAX. */
static inline int64_t
offload_ns_add(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

/* The absolute time `seconds` after `now` (a normalised timespec with
 * tv_sec >= 0), saturating. */
static inline struct timespec
offload_timespec_after(struct timespec now, double seconds)
{
    double s = offload_clamp_seconds(seconds);
    time_t whole = (time_t)s; /* s <= 1e9 fits every time_t */
    long frac = (long)((s - (double)whole) * 1e9);
    if (frac < 0) {
        frac = 0;
    }
    if (frac >= OFFLOAD_NS_PER_S) { /* rounding just below a whole second */
        frac = OFFLOAD_NS_PER_S - 1;
    }
    struct timespec ts = now;
    if (ts.tv_sec > OFFLOAD_TIME_T_MAX - whole) {
        ts.tv_sec = OFFLOAD_TIME_T_MAX;
        ts.tv_nsec = OFFLOAD_NS_PER_S - 1;
        return ts;
    }
    ts.tv_sec += whole;
    ts.tv_nsec += frac;
    if (ts.tv_nsec >= OFFLOAD_NS_PER_S) {
        if (ts.tv_sec == OFFLOAD_TIME_T_MAX) {
            ts.tv_nsec = OFFLOAD_NS_PER_S - 1;
            return ts;
        }
        ts.tv_sec += 1;
        ts.tv_nsec -= OFFLOAD_NS_PER_S;
    }
    return ts;
}

/* The clock every engine condition variable waits on: monotonic, so a
 * wall-clock jump (NTP, a suspended VM, a test) shifts no wait. Platforms
 * without pthread_condattr_setclock (macOS) keep the wall clock. */
#if defined(__APPLE__)
#define OFFLOAD_COND_CLOCK CLOCK_REALTIME
#else
#define OFFLOAD_COND_CLOCK CLOCK_MONOTONIC
#endif

/* pthread_cond_init on OFFLOAD_COND_CLOCK: every engine condition variable
 * is made here, so every offload_deadline() is on the clock it waits on. */
static inline int
offload_cond_init(pthread_cond_t *cv)
{
#if defined(__APPLE__)
    return pthread_cond_init(cv, NULL);
#else
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
#endif
}

/* An absolute OFFLOAD_COND_CLOCK deadline `seconds` from now, for
 * pthread_cond_timedwait on a condition variable made by offload_cond_init
 * (it fails with EINVAL on a bad timespec: a waiter looping on it would spin
 * holding its mutex). */
static inline struct timespec
offload_deadline(double seconds)
{
    struct timespec now;
    clock_gettime(OFFLOAD_COND_CLOCK, &now);
    return offload_timespec_after(now, seconds);
}

/* The absolute OFFLOAD_COND_CLOCK time of a CLOCK_MONOTONIC instant in ns. */
static inline struct timespec
offload_deadline_at_ns(int64_t monotonic_ns)
{
    struct timespec mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    int64_t now = (int64_t)mono.tv_sec * OFFLOAD_NS_PER_S + mono.tv_nsec;
    double left = monotonic_ns > now ? (double)(monotonic_ns - now) / 1e9 : 0.0;
    return offload_deadline(left);
}

/* ---- the engine's seconds options, normalised -------------------------- */

/* The pool's idle_timeout: at least 1 ms (0 would make idle workers exit
 * between two bursts); nan is refused by the Python options, 1 ms here too. */
static inline double
offload_idle_seconds(double idle_timeout)
{
    double s = offload_clamp_seconds(idle_timeout);
    return s > 0.001 ? s : 0.001;
}

/* A join/wait timeout: negative and nan mean "don't wait", inf "as long as it takes". */
static inline double
offload_wait_seconds(double timeout)
{
    return offload_clamp_seconds(timeout);
}

#endif
