// `pagoda tokenize` and `pagoda detokenize`: the tokenizer from the command line.
//   pagoda tokenize --model DIR (--text T | --file F) [--no-special]   -> [ids...]
//   pagoda tokenize --model DIR --batch F [--decode]
//       F holds records "<byte length>\n<bytes>"; prints one JSON array per record and, with
//       --decode, after each a line with tok_decode of those ids in hex (for round-trip tests)
//   pagoda tokenize --model DIR --file F --bench N
//       encodes F N times on one thread; prints {"load_s", "bytes", "tokens", "best_s", "mb_per_s",
//       "best_cpu_s", "cpu_mb_per_s"} (best of N, wall clock and process CPU time)
//   pagoda detokenize --model DIR --ids 1,2,3 [--skip-special]          -> text
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

static void print_ids(FILE *f, const int32_t *ids, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ", %d" : "%d", ids[i]);
    fputs("]\n", f);
}

// Reads a whole input file; on failure says why on stderr and returns NULL.
static char *read_input(const char *path, size_t *len) {
    char err[PG_ERR_LEN];
    char *buf = pg_read_file(path, len, err);
    if (!buf) fprintf(stderr, "pagoda tokenize: %s\n", err);
    return buf;
}

static int tokenize_batch(const struct tokenizer *t, const char *path, bool special, bool roundtrip) {
    char err[PG_ERR_LEN];
    size_t len;
    char *buf = read_input(path, &len);
    if (!buf) return 1;
    int rc = 0;
    size_t pos = 0;
    for (long rec = 0; pos < len; rec++) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(buf + pos, &end, 10);
        if (errno || end == buf + pos || *end != '\n' || n > len - (size_t)(end + 1 - buf)) {
            fprintf(stderr, "pagoda tokenize: %s: bad record %ld\n", path, rec);
            rc = 1;
            break;
        }
        const char *s = end + 1;
        int32_t *ids;
        int nid;
        if (tok_encode(t, s, (size_t)n, special, &ids, &nid, err)) {
            fprintf(stderr, "pagoda tokenize: record %ld: %s\n", rec, err);
            rc = 1;
            break;
        }
        print_ids(stdout, ids, nid);
        if (roundtrip) {
            size_t dl;
            char *d = tok_decode(t, ids, nid, false, &dl);
            for (size_t i = 0; i < dl; i++) printf("%02x", (unsigned char)d[i]);
            putchar('\n');
            free(d);
        }
        free(ids);
        pos = (size_t)(s - buf) + (size_t)n;
    }
    free(buf);
    return rc;
}

static double cpu_now(void) { // process CPU seconds (robust to other load on the machine)
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int tokenize_bench(const struct tokenizer *t, const char *path, int reps, double load_s) {
    char err[PG_ERR_LEN];
    size_t len;
    char *buf = read_input(path, &len);
    if (!buf) return 1;
    double best = 1e30, best_cpu = 1e30;
    int n = 0;
    for (int r = 0; r < reps; r++) {
        int32_t *ids;
        double c0 = cpu_now(), t0 = pg_now();
        if (tok_encode(t, buf, len, true, &ids, &n, err)) {
            fprintf(stderr, "pagoda tokenize: %s\n", err);
            free(buf);
            return 1;
        }
        double dt = pg_now() - t0, dc = cpu_now() - c0;
        if (dt < best) best = dt;
        if (dc < best_cpu) best_cpu = dc;
        free(ids);
    }
    printf("{\"load_s\": %.4f, \"bytes\": %zu, \"tokens\": %d, \"best_s\": %.5f, \"mb_per_s\": %.2f, "
           "\"best_cpu_s\": %.5f, \"cpu_mb_per_s\": %.2f}\n",
           load_s, len, n, best, (double)len / 1e6 / best, best_cpu, (double)len / 1e6 / best_cpu);
    free(buf);
    return 0;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL, *batch = NULL;
    bool special = true, roundtrip = false;
    int bench = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = v, i++;
        else if (!strcmp(a, "--text") && v) text = v, i++;
        else if (!strcmp(a, "--file") && v) file = v, i++;
        else if (!strcmp(a, "--batch") && v) batch = v, i++;
        else if (!strcmp(a, "--bench") && v) bench = atoi(v), i++;
        else if (!strcmp(a, "--no-special")) special = false;
        else if (!strcmp(a, "--decode")) roundtrip = true;
        else {
            fprintf(stderr, "usage: pagoda tokenize --model DIR (--text T | --file F | --batch F) "
                            "[--no-special] [--decode] [--bench N]\n");
            return 2;
        }
    }
    if (!model || (!!text + !!file + !!batch) != 1) {
        fprintf(stderr, "pagoda tokenize: need --model and exactly one of --text, --file, --batch\n");
        return 2;
    }
    char err[PG_ERR_LEN];
    double t0 = pg_now();
    struct tokenizer *t = tok_load(model, err);
    double load_s = pg_now() - t0;
    if (!t) {
        fprintf(stderr, "pagoda tokenize: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (bench > 0 && file) {
        rc = tokenize_bench(t, file, bench, load_s);
    } else if (batch) {
        rc = tokenize_batch(t, batch, special, roundtrip);
    } else {
        size_t len = text ? strlen(text) : 0;
        char *buf = file ? pg_read_file(file, &len, err) : NULL;
        int32_t *ids = NULL;
        int n = 0;
        if ((file && !buf) || tok_encode(t, file ? buf : text, len, special, &ids, &n, err)) {
            fprintf(stderr, "pagoda tokenize: %s\n", err);
            rc = 1;
        } else {
            print_ids(stdout, ids, n);
        }
        free(ids);
        free(buf);
    }
    tok_free(t);
    return rc;
}

// Parses "1,2,3" or "[1, 2, 3]" into a malloc'd array.
static int parse_ids(const char *s, int32_t **out, int *n) {
    int cap = 16;
    int32_t *ids = pg_malloc((size_t)cap * sizeof *ids);
    *n = 0;
    for (const char *p = s; *p;) {
        if (strchr("[], \t\n", *p)) {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            free(ids);
            return -1;
        }
        if (*n == cap) ids = pg_realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
        ids[(*n)++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *idstr = NULL;
    bool skip = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = v, i++;
        else if (!strcmp(a, "--ids") && v) idstr = v, i++;
        else if (!strcmp(a, "--skip-special")) skip = true;
        else {
            fprintf(stderr, "usage: pagoda detokenize --model DIR --ids 1,2,3 [--skip-special]\n");
            return 2;
        }
    }
    if (!model || !idstr) {
        fprintf(stderr, "pagoda detokenize: need --model and --ids\n");
        return 2;
    }
    int32_t *ids;
    int n;
    if (parse_ids(idstr, &ids, &n)) {
        fprintf(stderr, "pagoda detokenize: bad --ids '%s' (want 1,2,3)\n", idstr);
        return 2;
    }
    char err[PG_ERR_LEN];
    struct tokenizer *t = tok_load(model, err);
    if (!t) {
        fprintf(stderr, "pagoda detokenize: %s\n", err);
        free(ids);
        return 1;
    }
    for (int i = 0; i < n; i++)
        if (!tok_token_bytes(t, ids[i], NULL)) fprintf(stderr, "pagoda detokenize: warning: unknown id %d skipped\n", ids[i]);
    size_t len;
    char *s = tok_decode(t, ids, n, skip, &len);
    fwrite(s, 1, len, stdout);
    free(s);
    free(ids);
    tok_free(t);
    return 0;
}
