/*
 * RESP framing helpers shared by the C extensions (proxy/protocol/_speedups.c and
 * proxy/dataplane/_fastpath.c): they find boundaries without building objects.
 */
#ifndef RRP_RESP_SCAN_H
#define RRP_RESP_SCAN_H

#include <string.h>

/* Parse a non-negative decimal between p and e; -1 if empty/invalid/huge. */
static inline long long parse_len(const char *p, const char *e) {
    long long v = 0;
    if (p >= e || e - p > 18) return -1;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* The first CRLF in [p, end), or NULL. */
static inline const char *find_crlf(const char *p, const char *end) {
    while (p + 1 < end) {
        const char *r = memchr(p, '\r', (size_t)(end - p - 1));
        if (r == NULL) return NULL;
        if (r[1] == '\n') return r;
        p = r + 1;
    }
    return NULL;
}

/*
 * One step of scanning RESP replies at base + *pos (before end): a simple value or a bulk
 * completes an element (*nest - 1), an aggregate's header adds its elements to *nest.
 * 1: stepped (*pos moved); 0: the bytes there are incomplete (nothing changed); -1: not RESP.
 * Every reply scanner of the extensions walks with it.
 */
static inline int resp_step(const char *base, const char *end, size_t *pos, long long *nest) {
    const char *p = base + *pos;
    if (p >= end) return 0;
    const char *nl = find_crlf(p, end);
    if (nl == NULL) return 0;
    char t = *p;
    if (t == '$' || t == '!' || t == '=') {
        long long size;
        if (p[1] == '-') size = -1;
        else if ((size = parse_len(p + 1, nl)) < 0) return -1;
        if (size < 0) {
            *pos = (size_t)(nl + 2 - base);
        } else {
            if (size > end - nl - 4) return 0;
            *pos = (size_t)(nl + 4 + size - base);
        }
        (*nest)--;
    } else if (t == '+' || t == '-' || t == ':' || t == '_' || t == '#' || t == ',' || t == '(') {
        *pos = (size_t)(nl + 2 - base);
        (*nest)--;
    } else if (t == '*' || t == '~' || t == '>' || t == '%' || t == '|') {
        long long count;
        if (p[1] == '-') count = -1;
        else if ((count = parse_len(p + 1, nl)) < 0) return -1;
        *pos = (size_t)(nl + 2 - base);
        if (t == '%') *nest += 2 * count - 1;
        else if (t == '|') *nest += 2 * count;
        else *nest += count > 0 ? count - 1 : -1;
    } else {
        return -1;
    }
    return 1;
}

#endif
