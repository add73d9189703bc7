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

#endif
