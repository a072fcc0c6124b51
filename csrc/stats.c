/* stats.c: log-linear latency histograms (see stats.h). */
#include <string.h>

#include "stats.h"

/* Bucket index: exponent e = floor(log2(ns)), then the next 2 bits below it. */
static int
bucket_of(uint64_t ns)
{
    if (ns < HIST_SUB) {
        return (int)ns;
    }
    int e = 63 - __builtin_clzll(ns);
    int sub = (int)((ns >> (e - 2)) & (HIST_SUB - 1));
    return e * HIST_SUB + sub;
}

/* Upper bound of a bucket, in ns (a conservative estimate for percentiles). */
static double
bucket_upper(int b)
{
    if (b < HIST_SUB) {
        return (double)b;
    }
    int e = b / HIST_SUB;
    int sub = b % HIST_SUB;
    double base = (double)(1ULL << e);
    return base + base * (double)(sub + 1) / HIST_SUB;
}

void
hist_record(histogram *h, int64_t ns)
{
    if (ns < 0) {
        ns = 0;
    }
    h->counts[bucket_of((uint64_t)ns)]++;
    h->total++;
}

double
hist_quantile(const histogram *h, double q)
{
    if (h->total == 0) {
        return 0.0;
    }
    uint64_t rank = (uint64_t)(q * (double)h->total);
    if (rank >= h->total) {
        rank = h->total - 1;
    }
    uint64_t seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen > rank) {
            return bucket_upper(b);
        }
    }
    return bucket_upper(HIST_BUCKETS - 1);
}

void
lane_stats_reset(lane_stats *s)
{
    memset(s, 0, sizeof(*s));
}
