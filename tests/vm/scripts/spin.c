/* A spinner for the VM_SCRIPT clock-probe.sh (tests/vm/README.md): pinned
 * to CPU 1, it spins in MODE until SIGTERM, then prints its rate.
 *
 *   spin plain|pause|rdtsc|gettime [EVERY]
 *
 * plain: a counter; pause: the `pause` instruction each turn; rdtsc: one
 * `rdtsc` every EVERY turns (default 1); gettime: clock_gettime each turn.
 * Build it static on the host (the guest has no compiler):
 *   cc -O2 -static -o /tmp/vm-spin tests/vm/scripts/spin.c */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";
    unsigned long every = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
    unsigned long long turns = 0, sink = 0;
    struct timespec t0, t1, ts;
    cpu_set_t cpus;

    if (every == 0)
        every = 1;
    CPU_ZERO(&cpus);
    CPU_SET(1, &cpus);
    if (sched_setaffinity(0, sizeof cpus, &cpus) != 0) {
        perror("spin: sched_setaffinity to CPU 1");
        return 1;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (strcmp(mode, "plain") == 0) {
        while (!stop)
            sink += ++turns;
    } else if (strcmp(mode, "pause") == 0) {
        while (!stop) {
            turns++;
            _mm_pause();
        }
    } else if (strcmp(mode, "rdtsc") == 0) {
        while (!stop)
            if (++turns % every == 0)
                sink += __rdtsc();
    } else if (strcmp(mode, "gettime") == 0) {
        while (!stop) {
            turns++;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            sink += (unsigned long long)ts.tv_nsec;
        }
    } else {
        fprintf(stderr, "spin: unknown mode %s (plain, pause, rdtsc, gettime)\n", mode);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("spin %s every %lu: %.0f turns/s (%.1f ns a turn) [%llu]\n", mode, every,
           (double)turns / secs, secs * 1e9 / (double)turns, sink & 1);
    return 0;
}
