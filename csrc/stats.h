/* stats.h: per-lane counters and latency histograms.
 *
 * Histograms are log-linear (4 sub-buckets per power of two of nanoseconds), so
 * recording is O(1) and a percentile is within ~19% of the true value. Guarded
 * by the owning lane's mutex. */
#ifndef OFFLOAD_STATS_H
#define OFFLOAD_STATS_H

#include <stdint.h>

#define HIST_SUB 4
#define HIST_BUCKETS (64 * HIST_SUB)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
} histogram;

typedef struct {
    uint64_t submitted, succeeded, failed, cancelled, rejected, dropped;
    uint64_t retried;   /* attempts that failed and were given another */
    uint64_t timed_out; /* attempts that reached their timeout */
    histogram queue_wait; /* accepted -> started */
    histogram run_time;   /* started -> finished */
} lane_stats;

void hist_record(histogram *h, int64_t ns);
/* The value (ns) below which `q` (0..1) of the samples fall; 0 when empty. */
double hist_quantile(const histogram *h, double q);
void lane_stats_reset(lane_stats *s);

#endif
