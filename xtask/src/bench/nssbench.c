/* nssbench: per-call latency of glibc NSS user/group lookups, in one process.
 *
 * Smith's copy of shared/bench/nss/nssbench.c (the anchors were measured with that
 * one). The single-threaded glibc path below is the same measurement; added here:
 *   -t T        run every timed phase in T threads at once (after one shared warm-up);
 *               each thread has its own buffer, random sequence and T*N samples merge
 *               into one RESULT line.
 *   -d LIB      "direct": call LIB's _nss_smith_* entry points through dlopen instead of
 *               glibc (no nsswitch.conf parsing, no stat per call): the module's own cost.
 *   phase stat  stat("/etc/nsswitch.conf"): the syscall glibc >= 2.33 makes on every
 *               lookup to notice a changed nsswitch.conf (the floor no module can avoid).
 *
 * Phases (each: warm-up first, then N timed calls, clock_gettime around each call):
 *   pwnam_hit     getpwnam_r  on random existing names            (warm: every name once)
 *   pwnam_miss    getpwnam_r  on random names from a pool of 1000 non-existent names
 *                             (warm: every pool name once => daemons' negative caches hot)
 *   pwnam_miss_u  getpwnam_r  on non-existent names never asked before (unique per call)
 *   pwuid_hit     getpwuid_r  on random existing uids              (warm: every uid once)
 *   grouplist     getgrouplist(name, primary gid) on random users  (warm: every user once)
 *   stat          stat("/etc/nsswitch.conf")
 *
 * Usage: nssbench -f names.txt [-n N] [-s seed] [-l label] [-w all|K] [-m] [-p phase,...]
 *                 [-t threads] [-d /path/libnss_smith.so.2]
 * Output: one "RESULT" line per phase: label phase n mean p50 p90 p99 max (microseconds)
 *         errors avg_groups wall_s.  gcc -O2 -pthread -o nssbench nssbench.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <nss.h>
#include <pthread.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct { char name[32]; uid_t uid; gid_t gid; } ent_t;

static ent_t *ents;
static size_t nents;
static uint64_t seed0 = 88172645463325252ull;
static inline uint64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
static int markers;
static const char *label = "run";

/* The module's entry points, for -d. */
typedef enum nss_status (*pwnam_fn)(const char *, struct passwd *, char *, size_t, int *);
typedef enum nss_status (*pwuid_fn)(uid_t, struct passwd *, char *, size_t, int *);
typedef enum nss_status (*initgroups_fn)(const char *, gid_t, long *, long *, gid_t **, long, int *);
static pwnam_fn d_pwnam;
static pwuid_fn d_pwuid;
static initgroups_fn d_initgroups;

/* Everything one thread needs. */
typedef struct {
    uint64_t rs;
    char buf[1 << 16];
    gid_t *groups; long gcap;
    uint64_t *lat;
    size_t n;
    const char *phase;
    long errors;
    double groups_sum;
    unsigned long tag;
    int id;
} worker_t;

static uint64_t xr(worker_t *w) { w->rs ^= w->rs << 13; w->rs ^= w->rs >> 7; w->rs ^= w->rs << 17; return w->rs; }

static int pwnam(worker_t *w, const char *n) {
    struct passwd pw, *res = NULL;
    if (d_pwnam) { int e = 0; return d_pwnam(n, &pw, w->buf, sizeof w->buf, &e) == NSS_STATUS_SUCCESS; }
    return getpwnam_r(n, &pw, w->buf, sizeof w->buf, &res) == 0 && res != NULL;
}
static int pwuid(worker_t *w, uid_t u) {
    struct passwd pw, *res = NULL;
    if (d_pwuid) { int e = 0; return d_pwuid(u, &pw, w->buf, sizeof w->buf, &e) == NSS_STATUS_SUCCESS; }
    return getpwuid_r(u, &pw, w->buf, sizeof w->buf, &res) == 0 && res != NULL;
}
static int grouplist(worker_t *w, const char *n, gid_t g) {
    if (d_initgroups) {
        /* As glibc's getgrouplist does: the primary group first, then the module. */
        long start = 1; int e = 0;
        w->groups[0] = g;
        enum nss_status st = d_initgroups(n, g, &start, &w->gcap, &w->groups, 0, &e);
        return st == NSS_STATUS_SUCCESS || st == NSS_STATUS_NOTFOUND ? (int)start : -1;
    }
    gid_t groups[4096]; int ng = 4096;
    return getgrouplist(n, g, groups, &ng) < 0 ? -1 : ng;
}
static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b; return x < y ? -1 : x > y;
}
static void mark(const char *phase, const char *what) {
    if (markers) { char m[128]; int l = snprintf(m, sizeof m, "PHASE %s %s %s\n", label, phase, what);
                   if (write(2, m, l) < 0) {} }
}
static void report(const char *phase, uint64_t *lat, size_t n, long errors, double avg_groups, double wall) {
    double sum = 0; for (size_t i = 0; i < n; i++) sum += lat[i];
    qsort(lat, n, sizeof *lat, cmp_u64);
#define P(q) (lat[(size_t)((double)(n - 1) * (q))] / 1000.0)
    printf("RESULT\t%s\t%s\t%zu\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%ld\t%.2f\t%.2f\n", label, phase, n,
           sum / n / 1000.0, P(0.50), P(0.90), P(0.99), lat[n - 1] / 1000.0, errors, avg_groups, wall);
    fflush(stdout);
}

enum { POOL = 1000 };
static char pool[POOL][32];
static pthread_barrier_t start_line;
static unsigned nthreads = 1;

static void *timed(void *arg) {
    worker_t *w = arg;
    const char *p = w->phase;
    char nb[64];
    struct stat st;
    if (nthreads > 1) pthread_barrier_wait(&start_line);
    for (size_t i = 0; i < w->n; i++) {
        uint64_t t0, t1; int r;
        if (!strcmp(p, "pwnam_hit")) { const char *q = ents[xr(w) % nents].name;
            t0 = now_ns(); r = pwnam(w, q); t1 = now_ns(); w->errors += !r; }
        else if (!strcmp(p, "pwnam_miss")) { const char *q = pool[xr(w) % POOL];
            t0 = now_ns(); r = pwnam(w, q); t1 = now_ns(); w->errors += r; }
        else if (!strcmp(p, "pwnam_miss_u")) { snprintf(nb, sizeof nb, "nu%lx_%d_%zu", w->tag, w->id, i);
            t0 = now_ns(); r = pwnam(w, nb); t1 = now_ns(); w->errors += r; }
        else if (!strcmp(p, "pwuid_hit")) { uid_t q = ents[xr(w) % nents].uid;
            t0 = now_ns(); r = pwuid(w, q); t1 = now_ns(); w->errors += !r; }
        else if (!strcmp(p, "stat")) {
            t0 = now_ns(); r = stat("/etc/nsswitch.conf", &st); t1 = now_ns(); w->errors += r != 0; }
        else { ent_t *e = &ents[xr(w) % nents];
            t0 = now_ns(); r = grouplist(w, e->name, e->gid); t1 = now_ns();
            w->errors += r < 1; w->groups_sum += r; }
        w->lat[i] = t1 - t0;
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *file = NULL, *phases = "pwnam_hit,pwnam_miss,pwnam_miss_u,pwuid_hit,grouplist";
    const char *direct = NULL;
    size_t n = 5000; long warm = -1; int opt;
    while ((opt = getopt(argc, argv, "f:n:s:l:w:mp:t:d:")) != -1) switch (opt) {
        case 'f': file = optarg; break;
        case 'n': n = strtoul(optarg, 0, 10); break;
        case 's': seed0 = strtoull(optarg, 0, 10) * 2654435761ull + 1; break;
        case 'l': label = optarg; break;
        case 'w': warm = strcmp(optarg, "all") ? atol(optarg) : -1; break;
        case 'm': markers = 1; break;
        case 'p': phases = optarg; break;
        case 't': nthreads = (unsigned)strtoul(optarg, 0, 10); break;
        case 'd': direct = optarg; break;
        default: fprintf(stderr, "bad usage\n"); return 2;
    }
    if (!file || n == 0 || nthreads < 1 || nthreads > 256) { fprintf(stderr, "need -f names.txt, n > 0, 1..256 threads\n"); return 2; }
    if (direct) {
        void *h = dlopen(direct, RTLD_NOW | RTLD_LOCAL);
        if (!h) { fprintf(stderr, "dlopen %s: %s\n", direct, dlerror()); return 2; }
        d_pwnam = (pwnam_fn)dlsym(h, "_nss_smith_getpwnam_r");
        d_pwuid = (pwuid_fn)dlsym(h, "_nss_smith_getpwuid_r");
        d_initgroups = (initgroups_fn)dlsym(h, "_nss_smith_initgroups_dyn");
        if (!d_pwnam || !d_pwuid || !d_initgroups) { fprintf(stderr, "%s lacks the _nss_smith_ symbols\n", direct); return 2; }
    }
    FILE *f = fopen(file, "r"); if (!f) { perror(file); return 2; }
    size_t cap = 1024; ents = malloc(cap * sizeof *ents);
    unsigned u, g; char nm[32];
    while (fscanf(f, "%31s %u %u", nm, &u, &g) == 3) {
        if (nents == cap) ents = realloc(ents, (cap *= 2) * sizeof *ents);
        snprintf(ents[nents].name, sizeof ents[nents].name, "%s", nm);
        ents[nents].uid = u; ents[nents].gid = g; nents++;
    }
    fclose(f);
    if (nents == 0) { fprintf(stderr, "%s: no entries\n", file); return 2; }
    for (int i = 0; i < POOL; i++) snprintf(pool[i], 32, "nx%05d", i);
    unsigned long tag = (unsigned long)getpid() ^ (unsigned long)(now_ns() / 1000);

    worker_t *ws = calloc((size_t)nthreads, sizeof *ws);
    for (unsigned t = 0; t < nthreads; t++) {
        ws[t].rs = seed0 + 0x9E3779B97F4A7C15ull * (uint64_t)t;
        ws[t].lat = malloc(n * sizeof(uint64_t));
        ws[t].gcap = 64; ws[t].groups = malloc(64 * sizeof(gid_t));
        ws[t].n = n; ws[t].tag = tag; ws[t].id = (int)t;
    }
    worker_t *w0 = &ws[0];
    uint64_t *all = malloc(n * (size_t)nthreads * sizeof(uint64_t));

    /* timer overhead */
    for (size_t i = 0; i < n; i++) { uint64_t t0 = now_ns(); all[i] = now_ns() - t0; }
    report("timer_overhead", all, n, 0, 0, 0);

    char ph[512]; snprintf(ph, sizeof ph, "%s", phases);
    for (char *p = strtok(ph, ","); p; p = strtok(NULL, ",")) {
        long errors = 0; char nb[64];
        size_t wn = warm < 0 ? 0 : (size_t)warm;
        mark(p, "warm");
        if (!strcmp(p, "pwnam_hit")) {
            if (warm < 0) for (size_t i = 0; i < nents; i++) errors += !pwnam(w0, ents[i].name);
            else for (size_t i = 0; i < wn; i++) errors += !pwnam(w0, ents[xr(w0) % nents].name);
        } else if (!strcmp(p, "pwnam_miss")) {
            if (warm < 0) for (int i = 0; i < POOL; i++) errors += pwnam(w0, pool[i]);
            else for (size_t i = 0; i < wn; i++) errors += pwnam(w0, pool[xr(w0) % POOL]);
        } else if (!strcmp(p, "pwnam_miss_u")) {
            for (size_t i = 0; i < (warm < 0 ? 200 : wn); i++) {
                snprintf(nb, sizeof nb, "nw%lx_%zu", tag, i); errors += pwnam(w0, nb); }
        } else if (!strcmp(p, "pwuid_hit")) {
            if (warm < 0) for (size_t i = 0; i < nents; i++) errors += !pwuid(w0, ents[i].uid);
            else for (size_t i = 0; i < wn; i++) errors += !pwuid(w0, ents[xr(w0) % nents].uid);
        } else if (!strcmp(p, "grouplist")) {
            if (warm < 0) for (size_t i = 0; i < nents; i++) errors += grouplist(w0, ents[i].name, ents[i].gid) < 1;
            else for (size_t i = 0; i < wn; i++) { ent_t *e = &ents[xr(w0) % nents]; errors += grouplist(w0, e->name, e->gid) < 1; }
        } else if (!strcmp(p, "stat")) {
            struct stat st; for (size_t i = 0; i < 100; i++) errors += stat("/etc/nsswitch.conf", &st) != 0;
        } else { fprintf(stderr, "unknown phase %s\n", p); return 2; }
        if (errors) fprintf(stderr, "%s %s: %ld errors during warm-up\n", label, p, errors);
        mark(p, "timed");
        for (unsigned t = 0; t < nthreads; t++) { ws[t].phase = p; ws[t].errors = 0; ws[t].groups_sum = 0; }
        uint64_t w_start = now_ns();
        if (nthreads == 1) {
            timed(w0);
        } else {
            pthread_t *tids = calloc((size_t)nthreads, sizeof *tids);
            pthread_barrier_init(&start_line, NULL, (unsigned)nthreads);
            for (unsigned t = 0; t < nthreads; t++)
                if (pthread_create(&tids[t], NULL, timed, &ws[t])) { fprintf(stderr, "pthread_create failed\n"); return 2; }
            for (unsigned t = 0; t < nthreads; t++) pthread_join(tids[t], NULL);
            pthread_barrier_destroy(&start_line);
            free(tids);
        }
        double wall = (now_ns() - w_start) / 1e9;
        mark(p, "end");
        double groups = 0;
        for (unsigned t = 0; t < nthreads; t++) {
            memcpy(all + (size_t)t * n, ws[t].lat, n * sizeof(uint64_t));
            errors += ws[t].errors; groups += ws[t].groups_sum;
        }
        size_t total = n * (size_t)nthreads;
        report(p, all, total, errors, strcmp(p, "grouplist") ? 0 : groups / total, wall);
    }
    return 0;
}
