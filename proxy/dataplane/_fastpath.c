/*
 * The C data plane (issue 16): plain client connections forwarded by a thread of
 * its own, with no Python and no GIL per command.
 *
 * Python keeps every decision that is not per command.  It accepts a connection,
 * authenticates it, and hands its socket here (`adopt`) only while the session
 * is plain (shared upstreams, db 0, RESP2, no transaction, tracking or
 * subscription).  It pushes a *permit* on every Raft tick and on every change
 * of the committed topology (`set_permit`): the master and the replicas fit for
 * reads, whether writes and reads may flow now (the same `can_write` and lease
 * checks the Python path makes), until when that answer may be trusted, and a
 * generation that changes with every change of roles.  This thread then, per
 * command:
 *
 *   - forwards GET-like reads and SET-like writes (the command table Python
 *     passes: nothing else) to its own pipelined connection per node, batching
 *     consecutive commands of one client to one node into one reply slot;
 *   - sends a write only while the permit says writes may flow and has not run
 *     out; a reply to a write is delivered only if the permit still holds and
 *     its generation is the one the write was sent under: a reply from a master
 *     that was replaced becomes the permit's error (safety rule 2), and one
 *     that arrives while the lease is lapsed is kept back until a permit of the
 *     same generation resumes it or `hold_s` fails it;
 *   - delivers replies in each client's order across nodes;
 *   - hands the connection back to Python (`take_back`) at a command boundary,
 *     once every reply owed is written, whenever anything else comes: another
 *     command, an inline or malformed command, a permit that says no, a node
 *     it cannot reach.  Python then answers exactly as if it had had the
 *     client all along.
 *
 * Reads follow read_your_writes conservatively: once a client wrote through
 * this thread its reads go to the master; a write waits for the client's reads
 * on a replica to be answered (it must not overtake them).
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../protocol/resp_scan.h"

enum { K_NONE = 0, K_READ = 1, K_WRITE = 2 };
enum { T_CLIENT = 1, T_UP = 2, T_CTL = 3 };
enum { U_IDLE = 0, U_CONNECTING = 1, U_READY = 2, U_DEAD = 3 };

#define MAX_NODES 32
#define ADDR_LEN 280
#define READ_CHUNK 65536
#define MAX_SLOTS_PER_CLIENT 10000      /* batches in flight per client: as Python's MAX_PENDING_SLOTS */
#define RECONNECT_AFTER_S 1.0
#define TABLE_SIZE 1024             /* open addressing, power of two */
#define NAME_MAX_LEN 32
#define MAX_BOUNDS 32               /* latency histogram buckets */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- buffers */
typedef struct {
    char *p;
    size_t off, len, cap;           /* live bytes: p[off:len] */
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (b->cap - b->len >= extra) return 0;
    if (b->off) {                   /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra) return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_append(buf_t *b, const char *p, size_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

static size_t buf_size(const buf_t *b) { return b->len - b->off; }

static void buf_consume(buf_t *b, size_t n) {
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

static void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}

/* ------------------------------------------------------------ the objects */
struct client;
struct upstream;

typedef struct slot {
    struct slot *cnext;             /* the client's reply order */
    struct slot *unext;             /* the node's FIFO */
    struct client *c;               /* NULL once the client is gone */
    int remaining;                  /* replies still to come */
    int got;                        /* replies received */
    int streamed;                   /* ... of them already moved to the client's output (head slot) */
    uint8_t is_write, on_replica, done, suspended, failed;
    uint64_t gen;                   /* permit generation it was sent under */
    double t0;                      /* queued at (command_duration_seconds) */
    double since;                   /* suspended since */
    char *fail_reply;               /* every reply becomes this once failed (owned) */
    size_t fail_len;
    buf_t out;
    /* ack = replica (rule 4): a slot sent to the master before a `WAIT 1 timeout` is held
     * (`gate`: that WAIT's slot) until the WAIT answers; the WAIT's own slot (`is_gate`)
     * holds the slots of its window (`held`), in the node's FIFO after them */
    struct slot *gate;
    uint8_t is_gate;
    struct slot **held;
    int nheld;
} slot_t;

typedef struct client {
    int type;
    int fd;
    uint64_t id;
    buf_t in, out;
    slot_t *head, *tail;
    int nslots;
    int resp3;                      /* 1: it speaks RESP3 (HELLO 3): its commands go on RESP3 connections */
    int wrote;                      /* wrote through this thread (read-your-writes applies) */
    int writes_owed;                /* its write slots not answered yet */
    double last_write_done;         /* mono() when the reply of its last write came */
    int replica_pending;            /* unanswered slots on replicas */
    int waiting;                    /* a write waits for replica_pending to reach 0 */
    int want_back;                  /* hand back to Python once drained */
    const char *back_reason;        /* why (a static string) */
    int bounces;                    /* times it came back before (Python's count, returned with it) */
    int reading;                    /* EPOLLIN registered */
    int want_out;                   /* EPOLLOUT registered */
    int dirty;
    struct client *dirty_next;
    struct client *all_next, *all_prev;     /* d->all: changed under d->mu (Python lists it) */
    /* what CLIENT LIST shows of it, read by Python without the thread's help */
    _Atomic double active;          /* mono() of the last bytes read from it */
    _Atomic int last_entry;         /* table index of the last command it forwarded; -1: none */
    _Atomic size_t seen_qbuf;       /* bytes read and not yet sent on (a partial command, or held) */
    _Atomic size_t seen_omem;       /* replies' bytes not yet written to it (it reads slowly) */
    _Atomic int seen_oll;           /* its commands not answered yet */
} client_t;

typedef struct upstream {
    int type;
    int fd;
    int resp3;                      /* a RESP3 connection (HELLO 3 in its handshake) */
    _Atomic uint64_t n_read, n_write;   /* commands sent on it (redis_raft_proxy_commands by node) */
    char addr[ADDR_LEN];
    char connect_to[ADDR_LEN];      /* its numeric address, looked up by Python ("": not yet) */
    int state;
    double dead_at;
    buf_t out, in;
    int hs_left;                    /* handshake replies still to discard */
    slot_t *head, *tail;
    long long nest;                 /* elements outstanding in the reply being scanned */
    size_t scanned;                 /* bytes of it scanned (from in.off) */
    int want_out;
    int unsent_write;               /* out holds a write (sent under unsent_gen) */
    uint64_t unsent_gen;
    slot_t **window;                /* ack = replica: slots queued on it since its last WAIT */
    int nwindow, capwindow;
    int window_write;               /* ... one of them with a write (a WAIT is due) */
    int waits_out;                  /* its WAITs not answered yet */
    size_t must_send;               /* bytes of out up to its last WAIT, not written yet */
    double held_since;              /* out held since (writes stopped before they left), 0 if not */
    int dirty;
    struct upstream *dirty_next;
} upstream_t;

typedef struct {
    uint64_t gen;
    char master[ADDR_LEN], master_at[ADDR_LEN];     /* (_at: numeric, DataPlane._connect_to) */
    char replicas[MAX_NODES][ADDR_LEN], replicas_at[MAX_NODES][ADDR_LEN];
    double caught[MAX_NODES];       /* every write answered before this is on that replica */
    double fit_until[MAX_NODES];    /* ... which serves reads until then (its last probe + down_after) */
    int nrep;
    int write_ok, read_ok, read_master, rw;
    int stopped;                    /* draining, MONITOR or CLIENT PAUSE: no new command, replies flow */
    double deadline;
    char *retire_reply;             /* a write's reply under an older generation */
    size_t retire_len;
    char *lapse_reply;              /* a write kept back for longer than hold_s */
    size_t lapse_len;
    char *wait_cmd;                 /* ack = replica: the WAIT sent after writes ("": ack = async) */
    size_t wait_len;
    char *noreplica_reply;          /* ... what a write held by a WAIT no replica confirmed becomes */
    size_t noreplica_len;
    double hold_s;
} permit_t;

typedef struct pending_adopt {
    struct pending_adopt *next;
    int fd;
    int bounces;
    int resp3;
    double wrote_at;                /* > 0: its last write, answered then, may not be on replicas yet */
    uint64_t id;
    char *data;
    size_t len;
} pending_adopt_t;

typedef struct handback {
    struct handback *next;
    int fd;
    int bounces;
    uint64_t id;
    int wrote;
    char *data;
    size_t len;
    char reason[64];
} handback_t;

typedef struct node_lost {
    struct node_lost *next;
    char addr[ADDR_LEN];
} node_lost_t;

typedef struct {
    char name[NAME_MAX_LEN + 1];
    uint8_t len, kind;
} entry_t;

typedef struct {
    /* fixed at creation */
    int epfd, ctl_fd, back_fd;
    pthread_t thread;
    int started;
    entry_t table[TABLE_SIZE];
    _Atomic long long max_bulk, max_args;   /* Python may change them (SIGHUP): set_limits() */
    _Atomic size_t output_limit;
    char *handshake[2];             /* [resp3]: AUTH if any, then HELLO 3 for RESP3 connections */
    size_t handshake_len[2];
    int handshake_replies[2];
    int ctl_tag, back_tag;

    /* shared with Python, under mu */
    pthread_mutex_t mu;
    pending_adopt_t *adopts;
    permit_t next_permit;
    int permit_changed;
    permit_t pushed;                /* the last permit Python pushed (its replies not kept) */
    int wake_to_renew;              /* the thread has writes held or replies kept back: a renewal wakes it */
    int recall;
    int stop;
    handback_t *backs, *backs_tail;
    node_lost_t *lost;              /* nodes whose connection failed, for Python to hold writes */
    uint64_t *kills;                /* client ids to close (CLIENT KILL) */
    size_t nkills, kills_cap;

    /* command_duration_seconds of its batches, [0] reads [1] writes, as Python's Histogram */
    double bounds[MAX_BOUNDS];
    int nbounds;
    _Atomic uint64_t lat_counts[2][MAX_BOUNDS + 1];
    _Atomic uint64_t lat_total_ns[2];

    /* counters: written by the thread, read by Python */
    _Atomic uint64_t n_read, n_write, n_adopted, n_back, n_retired, n_lapsed, n_up_errors,
        n_bytes_in, n_bytes_out, n_closed_output, n_clients;

    /* the thread's own */
    permit_t permit;
    upstream_t *ups[MAX_NODES * 4];  /* a connection per node and protocol */
    int nups;
    upstream_t *master[2];          /* [resp3] */
    upstream_t *replicas[2][MAX_NODES];
    double caught[MAX_NODES];       /* the permit's, for replicas[.][k] */
    double fit_until[MAX_NODES];
    int nrep;
    client_t *dirty_clients;
    upstream_t *dirty_ups;
    client_t *all;
    int suspended;                  /* slots kept back (a hint: rechecked by scan) */
    int held;                       /* nodes whose unsent writes are held (up_flush) */
    double now;
} dp_t;

static void permit_free(permit_t *p) {
    free(p->retire_reply);
    free(p->lapse_reply);
    free(p->wait_cmd);
    free(p->noreplica_reply);
    p->retire_reply = p->lapse_reply = p->wait_cmd = p->noreplica_reply = NULL;
}

static int same_bytes(const char *a, size_t alen, const char *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Whether `b` only renews `a`: the same roles and rules and replies, trusted as long at
 * least, its replicas readable as long and caught up as far at least. Such a permit
 * changes nothing the thread is doing unless it holds something back (issue 16: a
 * renewal every Raft tick woke a thread serving idle pooled clients 20 times a second,
 * and each wake-up walked all its clients). */
static int renews(const permit_t *a, const permit_t *b) {
    if (a->gen != b->gen || strcmp(a->master, b->master) || strcmp(a->master_at, b->master_at) ||
        a->nrep != b->nrep || a->write_ok != b->write_ok || a->read_ok != b->read_ok ||
        a->read_master != b->read_master || a->rw != b->rw || a->stopped != b->stopped ||
        a->hold_s != b->hold_s || b->deadline < a->deadline ||
        !same_bytes(a->retire_reply, a->retire_len, b->retire_reply, b->retire_len) ||
        !same_bytes(a->lapse_reply, a->lapse_len, b->lapse_reply, b->lapse_len) ||
        !same_bytes(a->wait_cmd, a->wait_len, b->wait_cmd, b->wait_len) ||
        !same_bytes(a->noreplica_reply, a->noreplica_len, b->noreplica_reply, b->noreplica_len))
        return 0;
    for (int i = 0; i < a->nrep; i++)
        if (strcmp(a->replicas[i], b->replicas[i]) || strcmp(a->replicas_at[i], b->replicas_at[i]) ||
            b->caught[i] < a->caught[i] || b->fit_until[i] < a->fit_until[i])
            return 0;
    return 1;
}

/* ------------------------------------------------------ command table */
static uint32_t name_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int table_put(dp_t *d, const char *name, size_t n, int kind) {
    if (n == 0 || n > NAME_MAX_LEN) return 0;
    uint32_t i = name_hash(name, n) & (TABLE_SIZE - 1);
    for (int probes = 0; probes < TABLE_SIZE; probes++, i = (i + 1) & (TABLE_SIZE - 1)) {
        entry_t *e = &d->table[i];
        if (e->len == 0 || (e->len == n && memcmp(e->name, name, n) == 0)) {
            memcpy(e->name, name, n);
            e->len = (uint8_t)n;
            e->kind = (uint8_t)kind;
            return 0;
        }
    }
    return -1;
}

/* The table index of the (already lower-cased) name; -1 if not in the table. */
static int table_index(const dp_t *d, const char *name, size_t n) {
    if (n == 0 || n > NAME_MAX_LEN) return -1;
    uint32_t i = name_hash(name, n) & (TABLE_SIZE - 1);
    for (int probes = 0; probes < TABLE_SIZE; probes++, i = (i + 1) & (TABLE_SIZE - 1)) {
        const entry_t *e = &d->table[i];
        if (e->len == 0) return -1;
        if (e->len == n && memcmp(e->name, name, n) == 0) return (int)i;
    }
    return -1;
}

/* --------------------------------------------------------- RESP parsing */
enum { CMD_OK = 0, CMD_NEED = 1, CMD_OTHER = 2 };

/* One multibulk command at p: CMD_OK with its end and lower-cased name, CMD_NEED when
 * incomplete, CMD_OTHER for anything Python must see (inline, malformed, over a limit). */
static int parse_command(const dp_t *d, const char *p, const char *end, const char **cmd_end, char *name,
                         size_t *name_len) {
    if (*p != '*') return CMD_OTHER;
    const char *nl = find_crlf(p, end);
    if (nl == NULL) return (end - p > 64) ? CMD_OTHER : CMD_NEED;
    long long argc = parse_len(p + 1, nl);
    if (argc < 1 || argc > d->max_args) return CMD_OTHER;
    const char *q = nl + 2;
    for (long long i = 0; i < argc; i++) {
        if (q >= end) return CMD_NEED;
        if (*q != '$') return CMD_OTHER;
        nl = find_crlf(q, end);
        if (nl == NULL) return (end - q > 64) ? CMD_OTHER : CMD_NEED;
        long long n = parse_len(q + 1, nl);
        if (n < 0 || n > d->max_bulk) return CMD_OTHER;
        const char *v = nl + 2;
        if (end - v < n + 2) return CMD_NEED;
        if (v[n] != '\r' || v[n + 1] != '\n') return CMD_OTHER;
        if (i == 0) {
            if (n == 0 || n > NAME_MAX_LEN) {
                *name_len = 0;
            } else {
                for (long long k = 0; k < n; k++) {
                    char ch = v[k];
                    name[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
                }
                *name_len = (size_t)n;
            }
        }
        q = v + n + 2;
    }
    *cmd_end = q;
    return CMD_OK;
}

/* Advance the scan of one reply: 1 when it is complete (u->scanned is its length),
 * 0 when more bytes are needed, -1 on bytes that are not RESP. */
static int scan_reply(upstream_t *u) {
    const char *base = u->in.p + u->in.off;
    const char *end = u->in.p + u->in.len;
    if (u->nest == 0) {
        u->nest = 1;
        u->scanned = 0;
    }
    while (u->nest > 0) {
        int stepped = resp_step(base, end, &u->scanned, &u->nest);
        if (stepped <= 0) return stepped;
    }
    return 1;
}

/* ------------------------------------------------------------- epoll glue */
static void ep_set(dp_t *d, int fd, void *tag, uint32_t events, int add) {
    struct epoll_event ev = {.events = events, .data.ptr = tag};
    epoll_ctl(d->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev);
}

static void client_events(dp_t *d, client_t *c) {
    uint32_t ev = (c->reading ? EPOLLIN : 0) | (c->want_out ? EPOLLOUT : 0);
    ep_set(d, c->fd, c, ev, 0);
}

static void mark_client(dp_t *d, client_t *c) {
    if (!c->dirty) {
        c->dirty = 1;
        c->dirty_next = d->dirty_clients;
        d->dirty_clients = c;
    }
}

static void mark_up(dp_t *d, upstream_t *u) {
    if (!u->dirty) {
        u->dirty = 1;
        u->dirty_next = d->dirty_ups;
        d->dirty_ups = u;
    }
}

/* ---------------------------------------------------------------- clients */
static void slot_free(slot_t *s) {
    buf_free(&s->out);
    free(s->fail_reply);
    free(s->held);
    free(s);
}

static void client_free(dp_t *d, client_t *c) {
    pthread_mutex_lock(&d->mu);
    if (c->all_prev) c->all_prev->all_next = c->all_next;
    else d->all = c->all_next;
    if (c->all_next) c->all_next->all_prev = c->all_prev;
    pthread_mutex_unlock(&d->mu);
    buf_free(&c->in);
    buf_free(&c->out);
    atomic_fetch_sub(&d->n_clients, 1);
    free(c);
}

static void queue_back(dp_t *d, handback_t *h) {
    pthread_mutex_lock(&d->mu);
    if (d->backs_tail) d->backs_tail->next = h;
    else d->backs = h;
    d->backs_tail = h;
    pthread_mutex_unlock(&d->mu);
    uint64_t one = 1;
    ssize_t ignored = write(d->back_fd, &one, sizeof one);
    (void)ignored;
}

/* Close a client: its replies still owed are dropped as they come (their slots stay
 * in their nodes' FIFOs, ownerless).  Python hears of it (a hand-back without a socket,
 * reason "closed") and forgets what it kept of the client. */
static void client_close(dp_t *d, client_t *c) {
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    handback_t *h = calloc(1, sizeof *h);
    if (h != NULL) {
        h->fd = -1;
        h->id = c->id;
        snprintf(h->reason, sizeof h->reason, "closed");
        queue_back(d, h);
    }
    slot_t *s = c->head;
    while (s) {
        slot_t *next = s->cnext;
        if ((s->done || s->remaining == 0) && s->gate == NULL) slot_free(s);  /* out of every FIFO */
        else s->c = NULL;           /* (a gated one is freed by its WAIT's answer) */
        s = next;
    }
    c->head = c->tail = NULL;
    c->type = 0;                    /* freed when the dirty list is walked, never under a caller */
    mark_client(d, c);
}

static void client_flush(dp_t *d, client_t *c) {
    while (buf_size(&c->out)) {
        ssize_t w = write(c->fd, c->out.p + c->out.off, buf_size(&c->out));
        if (w > 0) {
            atomic_fetch_add(&d->n_bytes_out, (uint64_t)w);
            buf_consume(&c->out, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        client_close(d, c);
        return;
    }
    int want = buf_size(&c->out) > 0;
    atomic_store_explicit(&c->seen_omem, buf_size(&c->out), memory_order_relaxed);
    atomic_store_explicit(&c->seen_oll, c->nslots, memory_order_relaxed);
    if (want && d->output_limit && buf_size(&c->out) > d->output_limit) {
        atomic_fetch_add(&d->n_closed_output, 1);  /* a client that stops reading harms no one else */
        client_close(d, c);
        return;
    }
    if (want != c->want_out) {
        c->want_out = want;
        client_events(d, c);
    }
}

/* Write the complete slots at the head of the client's queue into its output. */
static void client_deliver(dp_t *d, client_t *c) {
    while (c->head && c->head->done) {
        slot_t *s = c->head;
        c->head = s->cnext;
        if (c->head == NULL) c->tail = NULL;
        c->nslots--;
        if (buf_size(&s->out)) buf_append(&c->out, s->out.p + s->out.off, buf_size(&s->out));
        slot_free(s);
    }
    mark_client(d, c);
}

/* ------------------------------------------------------------------ nodes */
static int split_addr(const char *addr, char *host, size_t hostcap, char *port) {
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= hostcap) return -1;
    const char *h = addr;
    size_t hl = (size_t)(colon - addr);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {  /* [::1]:6379 */
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    snprintf(port, 8, "%s", colon + 1);
    return 0;
}

/* A write of `c` was answered (or failed, its outcome unknown): read-your-writes counts from now. */
static void write_answered(dp_t *d, client_t *c) {
    c->writes_owed--;
    c->last_write_done = d->now;
}

/* `u`'s unsent writes are no longer held (they left, or failed). */
static void unhold(dp_t *d, upstream_t *u) {
    if (u->held_since > 0) {
        u->held_since = 0;
        d->held--;
    }
}

static void up_fail(dp_t *d, upstream_t *u, const char *why);

static void up_connect(dp_t *d, upstream_t *u) {
    char host[ADDR_LEN], port[8];
    /* numeric only: a lookup would block the thread (DataPlane._connect_to) */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res = NULL;
    if (split_addr(u->connect_to, host, sizeof host, port) < 0 || getaddrinfo(host, port, &hints, &res) != 0 ||
        !res) {
        if (res) freeaddrinfo(res);
        up_fail(d, u, "unresolvable");
        return;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        up_fail(d, u, "socket");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        up_fail(d, u, "unreachable");
        return;
    }
    u->fd = fd;
    u->state = U_CONNECTING;
    u->nest = 0;
    u->scanned = 0;
    u->hs_left = d->handshake_replies[u->resp3];
    /* the handshake goes first, before anything already queued */
    buf_t out = {0};
    if (d->handshake_len[u->resp3]) buf_append(&out, d->handshake[u->resp3], d->handshake_len[u->resp3]);
    if (buf_size(&u->out)) buf_append(&out, u->out.p + u->out.off, buf_size(&u->out));
    buf_free(&u->out);
    u->out = out;
    u->want_out = 1;
    ep_set(d, fd, u, EPOLLIN | EPOLLOUT, 1);
}

static void gate_release(dp_t *d, slot_t *g, const char *err, size_t errlen);

static void forget_window(upstream_t *u) {
    free(u->window);
    u->window = NULL;
    u->nwindow = u->capwindow = 0;
    u->window_write = 0;
}

/* Every reply still owed by `u` becomes an error; `u` is dead for RECONNECT_AFTER_S. */
static void up_fail(dp_t *d, upstream_t *u, const char *why) {
    char msg[ADDR_LEN + 96];
    int n = snprintf(msg, sizeof msg, "-ERR proxy: connection to Redis node %s lost (%s)\r\n", u->addr, why);
    if (n < 0 || (size_t)n >= sizeof msg) n = (int)strlen(msg);
    atomic_fetch_add(&d->n_up_errors, 1);
    if (u->fd >= 0) {
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, u->fd, NULL);
        close(u->fd);
        u->fd = -1;
    }
    u->state = U_DEAD;
    u->dead_at = d->now;
    unhold(d, u);
    /* Python marks the node suspect at once (ProxyServer.can_write: a failed connection holds
     * writes until a probe succeeds), as it does when one of its own connections fails */
    int network = !strcmp(why, "unreachable") || !strcmp(why, "closed by the node") || !strcmp(why, "read failed") ||
                  !strcmp(why, "write failed") || !strcmp(why, "unresolvable");
    node_lost_t *lost = network ? calloc(1, sizeof *lost) : NULL;
    if (lost) {
        snprintf(lost->addr, sizeof lost->addr, "%s", u->addr);
        pthread_mutex_lock(&d->mu);
        lost->next = d->lost;
        d->lost = lost;
        pthread_mutex_unlock(&d->mu);
        uint64_t one = 1;
        ssize_t ignored = write(d->back_fd, &one, sizeof one);
        (void)ignored;
    }
    buf_free(&u->in);
    buf_free(&u->out);
    u->nest = 0;
    u->scanned = 0;
    u->want_out = 0;
    u->unsent_write = 0;
    u->waits_out = 0;
    u->must_send = 0;
    forget_window(u);
    /* ack = replica: the writes a WAIT was to confirm are not acknowledged (the WAITs'
     * slots are then freed below, ownerless) */
    for (slot_t *g = u->head; g; g = g->unext)
        if (g->is_gate) gate_release(d, g, msg, (size_t)n);
    slot_t *s = u->head;
    while (s) {
        slot_t *next = s->unext;
        s->unext = NULL;
        client_t *c = s->c;
        if (c == NULL) {
            slot_free(s);
        } else {
            for (int i = 0; i < s->remaining; i++) buf_append(&s->out, msg, (size_t)n);
            if (s->suspended) {     /* what it kept back is an error too */
                buf_free(&s->out);
                for (int i = 0; i < s->got - s->streamed + s->remaining; i++) buf_append(&s->out, msg, (size_t)n);
                s->suspended = 0;
            }
            s->remaining = 0;
            s->done = 1;
            if (s->is_write) write_answered(d, c);  /* (its outcome unknown: maybe applied) */
            if (s->on_replica && --c->replica_pending == 0) c->waiting = 0;
            client_deliver(d, c);
        }
        s = next;
    }
    u->head = u->tail = NULL;
}

static upstream_t *up_get(dp_t *d, const char *addr, int resp3) {
    for (int i = 0; i < d->nups; i++)
        if (d->ups[i]->resp3 == resp3 && strcmp(d->ups[i]->addr, addr) == 0) return d->ups[i];
    if (d->nups >= (int)(sizeof d->ups / sizeof d->ups[0])) return NULL;
    upstream_t *u = calloc(1, sizeof *u);
    if (u == NULL) return NULL;
    u->type = T_UP;
    u->fd = -1;
    u->resp3 = resp3;
    snprintf(u->addr, sizeof u->addr, "%s", addr);
    pthread_mutex_lock(&d->mu);     /* (Python reads the list: node_stats) */
    d->ups[d->nups++] = u;
    pthread_mutex_unlock(&d->mu);
    return u;
}

/* The node's connection, (re)connecting when idle; NULL when it cannot take commands now. */
static upstream_t *up_usable(dp_t *d, upstream_t *u) {
    if (u == NULL) return NULL;
    if (u->state == U_DEAD) {
        if (d->now - u->dead_at < RECONNECT_AFTER_S) return NULL;
        u->state = U_IDLE;
    }
    if (u->state == U_IDLE && u->connect_to[0] == 0) return NULL;  /* its name not looked up yet: Python serves */
    if (u->state == U_IDLE) up_connect(d, u);
    return u->state == U_DEAD ? NULL : u;
}

static int writes_flow(const dp_t *d);

static int gate_window(dp_t *d, upstream_t *u);
static void slot_fail(slot_t *s, const char *reply, size_t len);

static void up_flush(dp_t *d, upstream_t *u) {
    if (u->state != U_READY) return;
    if (u->waits_out && u->must_send == 0 && buf_size(&u->out)) {
        /* ack = replica: a WAIT is out, and Redis runs nothing sent after it before it
         * answers: what came meanwhile waits here and goes with one WAIT when it does
         * (up_readable), rather than one WAIT per round, each a round trip to a replica */
        if (u->want_out) {
            u->want_out = 0;
            ep_set(d, u->fd, u, EPOLLIN, 0);
        }
        return;
    }
    if (u->nwindow && !gate_window(d, u)) return;
    if (u->unsent_write && u->unsent_gen != d->permit.gen) {
        /* a write still queued when the roles changed never leaves (rule 1) */
        up_fail(d, u, "closed by the proxy: the roles changed before these left");
        return;
    }
    if (u->unsent_write && !writes_flow(d)) {
        /* the lease lapsed (or the node is suspect) before they left: held, as Python's
         * WriteGate holds writes, until a permit of this generation lets writes flow
         * (apply_permit flushes them) or hold_s passes */
        if (u->held_since <= 0) {
            u->held_since = d->now;
            d->held++;
        }
        if (d->now - u->held_since < d->permit.hold_s) {
            if (u->want_out) {      /* (no EPOLLOUT meanwhile: it would fire at every round) */
                u->want_out = 0;
                ep_set(d, u->fd, u, EPOLLIN, 0);
            }
            return;
        }
        up_fail(d, u, "closed by the proxy: writes stopped before these left");
        return;
    }
    unhold(d, u);
    while (buf_size(&u->out)) {
        ssize_t w = write(u->fd, u->out.p + u->out.off, buf_size(&u->out));
        if (w > 0) {
            buf_consume(&u->out, (size_t)w);
            u->must_send = (size_t)w >= u->must_send ? 0 : u->must_send - (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        up_fail(d, u, "write failed");
        return;
    }
    int want = buf_size(&u->out) > 0;
    if (!want) u->unsent_write = 0;
    if (want != u->want_out) {
        u->want_out = want;
        ep_set(d, u->fd, u, EPOLLIN | (want ? EPOLLOUT : 0), 0);
    }
}

/* The permit lets a write's reply through now. */
static int writes_flow(const dp_t *d) { return d->permit.write_ok && d->now < d->permit.deadline; }

static void slot_fail(slot_t *s, const char *reply, size_t len) {
    static const char fallback[] = "-TRYAGAIN proxy: write outcome unknown\r\n";
    if (reply == NULL || len == 0) {
        reply = fallback;
        len = sizeof fallback - 1;
    }
    buf_free(&s->out);
    for (int i = s->streamed; i < s->got; i++) buf_append(&s->out, reply, len);   /* those not out yet */
    s->failed = 1;
    free(s->fail_reply);
    s->fail_reply = malloc(len);
    s->fail_len = s->fail_reply ? len : 0;
    if (s->fail_reply) memcpy(s->fail_reply, reply, len);
}

static void slot_reply(dp_t *d, slot_t *s, const char *p, size_t n) {
    s->got++;
    client_t *c = s->c;
    if (c == NULL) return;          /* the client is gone: its replies are dropped as they come */
    if (s->failed) {
        if (s->fail_len) buf_append(&s->out, s->fail_reply, s->fail_len);
        return;
    }
    if (s->is_write) {
        if (s->gen != d->permit.gen) {
            atomic_fetch_add(&d->n_retired, 1);
            buf_append(&s->out, p, n);
            slot_fail(s, d->permit.retire_reply, d->permit.retire_len);
            return;
        }
        if (!writes_flow(d) && !s->suspended) {
            s->suspended = 1;
            s->since = d->now;
            d->suspended++;
        }
    }
    if (c->head == s && !s->suspended && s->gate == NULL && buf_size(&s->out) == 0) {
        /* the client's next reply, checked: out now, so a long pipeline streams (as in Python) */
        buf_append(&c->out, p, n);
        s->streamed++;
        mark_client(d, c);
    } else {
        buf_append(&s->out, p, n);
    }
    if (d->output_limit && buf_size(&c->out) + buf_size(&s->out) > d->output_limit) {
        atomic_fetch_add(&d->n_closed_output, 1);  /* a client that stops reading harms no one else */
        client_close(d, c);
    }
}

static void time_batch(dp_t *d, const slot_t *s) {
    double took = d->now - s->t0;
    int i = 0;
    while (i < d->nbounds && took > d->bounds[i]) i++;     /* bisect_left, as Histogram.observe */
    atomic_fetch_add_explicit(&d->lat_counts[s->is_write][i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->lat_total_ns[s->is_write], (uint64_t)(took * 1e9), memory_order_relaxed);
}

static void slot_complete(dp_t *d, slot_t *s) {
    client_t *c = s->c;
    if (c == NULL) {
        if (s->suspended) d->suspended--;
        if (s->gate == NULL) slot_free(s);      /* (a gated one: its WAIT's answer frees it) */
        return;
    }
    if (s->is_write) write_answered(d, c);
    if (s->gate == NULL) time_batch(d, s);     /* (a gated one's time includes its WAIT: gate_release) */
    if (s->on_replica && --c->replica_pending == 0 && c->waiting) {
        c->waiting = 0;
        mark_client(d, c);      /* parse what waited */
    }
    if (s->suspended) return;   /* done when the permit decides */
    if (s->gate) return;        /* done when its WAIT answers */
    s->done = 1;
    client_deliver(d, c);
}

/* ack = replica: the slots queued on the master since its last WAIT, one with a write
 * among them, are held until a `WAIT 1 timeout` sent after them answers (Python's
 * WaitGate: one WAIT per flush, whatever the number of clients in it); slots without a
 * write go as they are. 0 if the node's connection failed (out of memory). */
static int gate_window(dp_t *d, upstream_t *u) {
    if (!u->window_write || d->permit.wait_len == 0) {
        u->nwindow = 0;
        u->window_write = 0;
        return 1;
    }
    slot_t *g = calloc(1, sizeof *g);
    if (g == NULL || buf_append(&u->out, d->permit.wait_cmd, d->permit.wait_len) < 0) {
        free(g);
        up_fail(d, u, "out of memory");
        return 0;
    }
    g->is_gate = 1;
    g->remaining = 1;
    g->gen = d->permit.gen;
    g->held = u->window;
    g->nheld = u->nwindow;
    u->window = NULL;
    u->nwindow = u->capwindow = 0;
    u->window_write = 0;
    u->waits_out++;
    u->must_send = buf_size(&u->out);
    for (int i = 0; i < g->nheld; i++) g->held[i]->gate = g;
    if (u->tail) u->tail->unext = g;
    else u->head = g;
    u->tail = g;
    return 1;
}

/* A WAIT answered (`err` NULL: a replica confirmed) or will not be (its connection failed):
 * its slots go to their clients, with every reply `err` when not confirmed (Python's
 * WaitGate.release). A slot still waiting for replies (the connection failed) stays in its
 * node's FIFO; an ownerless one that has them all is freed here. */
static void gate_release(dp_t *d, slot_t *g, const char *err, size_t errlen) {
    for (int i = 0; i < g->nheld; i++) {
        slot_t *s = g->held[i];
        s->gate = NULL;
        if (err && !s->failed) slot_fail(s, err, errlen);   /* (a retired write keeps its own error) */
        if (s->c == NULL) {
            if (s->remaining == 0) slot_free(s);
            continue;
        }
        if (s->remaining) continue;     /* (its connection failed: up_fail delivers it) */
        time_batch(d, s);
        if (!s->suspended) {
            s->done = 1;
            client_deliver(d, s->c);
        }
    }
    free(g->held);
    g->held = NULL;
    g->nheld = 0;
}

static int wait_confirmed(const char *p, size_t n) {
    return n > 3 && *p == ':' && strtoll(p + 1, NULL, 10) >= 1;
}

static void up_readable(dp_t *d, upstream_t *u) {
    for (;;) {
        if (buf_reserve(&u->in, READ_CHUNK) < 0) {
            up_fail(d, u, "out of memory");
            return;
        }
        size_t room = u->in.cap - u->in.len;
        ssize_t r = read(u->fd, u->in.p + u->in.len, room);
        if (r > 0) {
            u->in.len += (size_t)r;
            if ((size_t)r < room) break;
            continue;
        }
        if (r == 0) {
            up_fail(d, u, "closed by the node");
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        up_fail(d, u, "read failed");
        return;
    }
    for (;;) {
        int rc = scan_reply(u);
        if (rc == 0) break;
        if (rc < 0) {
            up_fail(d, u, "invalid reply");
            return;
        }
        const char *p = u->in.p + u->in.off;
        size_t n = u->scanned;
        u->nest = 0;
        if (*p == '>' && u->resp3) {   /* a push is no command's reply (none is asked for: no tracking) */
            buf_consume(&u->in, n);
            continue;
        }
        if (u->hs_left > 0) {
            u->hs_left--;
            if (*p == '-') {
                buf_consume(&u->in, n);
                up_fail(d, u, "handshake refused");
                return;
            }
            buf_consume(&u->in, n);
            continue;
        }
        slot_t *s = u->head;
        if (s == NULL) {
            up_fail(d, u, "unexpected reply");
            return;
        }
        if (s->is_gate) {
            int ok = wait_confirmed(p, n);
            buf_consume(&u->in, n);
            u->head = s->unext;
            if (u->head == NULL) u->tail = NULL;
            if (--u->waits_out == 0 && buf_size(&u->out)) mark_up(d, u);    /* what waited for it */
            if (ok) gate_release(d, s, NULL, 0);
            else {
                static const char fallback[] = "-NOREPLICAS proxy: write not acknowledged (ack = replica)\r\n";
                const char *e = d->permit.noreplica_len ? d->permit.noreplica_reply : fallback;
                gate_release(d, s, e, d->permit.noreplica_len ? d->permit.noreplica_len : sizeof fallback - 1);
            }
            slot_free(s);
            continue;
        }
        slot_reply(d, s, p, n);
        buf_consume(&u->in, n);
        if (--s->remaining == 0) {
            u->head = s->unext;
            if (u->head == NULL) u->tail = NULL;
            s->unext = NULL;
            slot_complete(d, s);
        }
    }
}

static void up_writable(dp_t *d, upstream_t *u) {
    if (u->state == U_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            up_fail(d, u, "unreachable");
            return;
        }
        u->state = U_READY;
    }
    up_flush(d, u);
}

/* A kept-back write slot: resumed by a permit of its generation, failed by a newer one
 * or after hold_s (WriteGate.settle's verdicts); 0 while it stays kept back. */
static int settle_slot(dp_t *d, slot_t *s) {
    if (s->gen != d->permit.gen) {
        atomic_fetch_add(&d->n_retired, 1);
        slot_fail(s, d->permit.retire_reply, d->permit.retire_len);
    } else if (!writes_flow(d)) {
        if (d->now - s->since < d->permit.hold_s) return 0;
        atomic_fetch_add(&d->n_lapsed, 1);
        slot_fail(s, d->permit.lapse_reply, d->permit.lapse_len);
    }
    s->suspended = 0;
    return 1;
}

/* Every kept-back write, in the nodes' FIFOs and (all replies in) in the clients' queues. */
static void recheck_suspended(dp_t *d) {
    int left = 0;
    for (int i = 0; i < d->nups; i++) {
        for (slot_t *s = d->ups[i]->head; s; s = s->unext) {
            if (!s->suspended || s->c == NULL) continue;
            if (!settle_slot(d, s)) left++;
        }
    }
    /* slots that got all their replies while kept back are in no FIFO: their clients' queues */
    for (client_t *c = d->all; c; c = c->all_next) {
        int changed = 0;
        for (slot_t *s = c->head; s; s = s->cnext) {
            if (!s->suspended || s->remaining) continue;
            if (!settle_slot(d, s)) {
                left++;
                continue;
            }
            if (s->gate) continue;  /* done when its WAIT answers */
            s->done = 1;
            changed = 1;
        }
        if (changed) client_deliver(d, c);
    }
    d->suspended = left;
}

/* -------------------------------------------------------------- routing */
enum { R_BACK = 0, R_WAIT = 1, R_GO = 2 };

static int route(dp_t *d, client_t *c, int kind, upstream_t **to) {
    const permit_t *pm = &d->permit;
    if (d->now >= pm->deadline || pm->stopped) return R_BACK;
    if (kind == K_WRITE) {
        if (!pm->write_ok) return R_BACK;
        if (c->replica_pending) return R_WAIT;
        *to = up_usable(d, d->master[c->resp3]);
        return *to ? R_GO : R_BACK;
    }
    if (!pm->read_ok) return R_BACK;
    if (!pm->read_master && d->nrep > 0) {
        int k = (int)(c->id % (uint64_t)d->nrep);
        /* read-your-writes: its writes answered, the last before a master probe whose
         * offset this replica has reached (Python's `caught` times, as ClientSession._caught_up) */
        int has_writes = pm->rw && c->wrote && (c->writes_owed > 0 || c->last_write_done >= d->caught[k]);
        int fit = d->now <= d->fit_until[k];    /* (a replica that stopped answering is not, at once) */
        upstream_t *u = has_writes || !fit ? NULL : up_usable(d, d->replicas[c->resp3][k]);
        if (u) {
            *to = u;
            return R_GO;
        }
    }
    if (!pm->write_ok) return R_BACK;   /* a read on the master passes the write gate in Python too */
    *to = up_usable(d, d->master[c->resp3]);
    return *to ? R_GO : R_BACK;
}

static slot_t *new_slot(dp_t *d, client_t *c, upstream_t *u) {
    slot_t *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->c = c;
    s->gen = d->permit.gen;
    s->t0 = d->now;
    s->on_replica = u != d->master[c->resp3];
    if (c->tail) c->tail->cnext = s;
    else c->head = s;
    c->tail = s;
    c->nslots++;
    if (u->tail) u->tail->unext = s;
    else u->head = s;
    u->tail = s;
    if (s->on_replica) c->replica_pending++;
    return s;
}

static void want_back(dp_t *d, client_t *c, const char *reason) {
    if (!c->want_back) c->back_reason = reason;
    c->want_back = 1;
    if (c->reading) {
        c->reading = 0;
        client_events(d, c);
    }
    mark_client(d, c);
}

/* The bytes of a batch (slot) go into the node's output, sent at the end of the round. */
static void queue_out(dp_t *d, upstream_t *u, slot_t *slot, const char *from, const char *to) {
    buf_append(&u->out, from, (size_t)(to - from));
    if (slot->is_write) {
        u->unsent_write = 1;
        u->unsent_gen = slot->gen;
    }
    if (d->permit.wait_len && (u == d->master[0] || u == d->master[1])) {
        /* ack = replica: held by the WAIT that follows (gate_window) */
        if (u->nwindow == u->capwindow) {
            int cap = u->capwindow ? 2 * u->capwindow : 16;
            slot_t **w = realloc(u->window, (size_t)cap * sizeof *w);
            if (w == NULL) {    /* it cannot be confirmed: its replies become errors */
                static const char oom[] = "-ERR proxy: out of memory (ack = replica)\r\n";
                slot_fail(slot, oom, sizeof oom - 1);
                mark_up(d, u);
                return;
            }
            u->window = w;
            u->capwindow = cap;
        }
        u->window[u->nwindow++] = slot;
        if (slot->is_write) u->window_write = 1;
    }
    mark_up(d, u);
}

static void count_sent(upstream_t *u, uint64_t *reads, uint64_t *writes) {
    if (*reads) atomic_fetch_add(&u->n_read, *reads);
    if (*writes) atomic_fetch_add(&u->n_write, *writes);
    *reads = *writes = 0;
}

/* Forward every complete command the client sent, batching runs to one node. */
static void client_parse(dp_t *d, client_t *c) {
    if (c->want_back || c->waiting || c->fd < 0) return;
    const char *base = c->in.p;
    const char *p = base + c->in.off;
    const char *end = base + c->in.len;
    upstream_t *cur = NULL;
    slot_t *slot = NULL;
    const char *seg = p;
    char name[NAME_MAX_LEN];
    uint64_t nread = 0, nwrite = 0, cur_read = 0, cur_write = 0;   /* all, and of the batch to `cur` */
    while (p < end) {
        if (c->nslots >= MAX_SLOTS_PER_CLIENT) break;   /* resumed as replies go out */
        const char *cmd_end;
        size_t name_len = 0;
        int rc = parse_command(d, p, end, &cmd_end, name, &name_len);
        if (rc == CMD_NEED) break;
        int entry = rc == CMD_OK ? table_index(d, name, name_len) : -1;
        int kind = entry >= 0 ? d->table[entry].kind : K_NONE;
        if (kind == K_NONE) {
            want_back(d, c, rc == CMD_OK ? "command" : "syntax");
            break;
        }
        upstream_t *to = NULL;
        int r = route(d, c, kind, &to);
        if (r == R_WAIT) {
            c->waiting = 1;
            break;
        }
        if (r == R_BACK) {
            want_back(d, c, d->now >= d->permit.deadline ? "permit_expired" : "permit");
            break;
        }
        if (to != cur || slot == NULL) {
            if (cur && p > seg) queue_out(d, cur, slot, seg, p);
            if (cur) count_sent(cur, &cur_read, &cur_write);
            cur = to;
            seg = p;
            slot = new_slot(d, c, to);
            if (slot == NULL) {
                want_back(d, c, "memory");
                break;
            }
        }
        slot->remaining++;
        atomic_store_explicit(&c->last_entry, entry, memory_order_relaxed);
        if (kind == K_WRITE) {
            if (!slot->is_write) c->writes_owed++;
            slot->is_write = 1;
            c->wrote = 1;
            nwrite++;
            cur_write++;
        } else {
            nread++;
            cur_read++;
        }
        p = cmd_end;
    }
    if (cur && p > seg) queue_out(d, cur, slot, seg, p);
    if (cur) count_sent(cur, &cur_read, &cur_write);
    buf_consume(&c->in, (size_t)(p - (base + c->in.off)));
    atomic_store_explicit(&c->seen_qbuf, buf_size(&c->in), memory_order_relaxed);
    atomic_store_explicit(&c->seen_oll, c->nslots, memory_order_relaxed);
    if (nread) atomic_fetch_add(&d->n_read, nread);
    if (nwrite) atomic_fetch_add(&d->n_write, nwrite);
    int reading = !c->want_back && !c->waiting && c->nslots < MAX_SLOTS_PER_CLIENT;
    if (reading != c->reading) {
        c->reading = reading;
        client_events(d, c);
    }
}

static void client_readable(dp_t *d, client_t *c) {
    for (;;) {
        if (buf_reserve(&c->in, READ_CHUNK) < 0) {
            client_close(d, c);
            return;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t r = read(c->fd, c->in.p + c->in.len, room);
        if (r > 0) {
            c->in.len += (size_t)r;
            atomic_store_explicit(&c->active, d->now, memory_order_relaxed);
            atomic_store_explicit(&c->seen_qbuf, buf_size(&c->in), memory_order_relaxed);
            atomic_fetch_add(&d->n_bytes_in, (uint64_t)r);
            if ((size_t)r < room) break;
            continue;
        }
        if (r == 0) {
            /* the client closed its side: what it sent is answered here, then Python, which
             * reads the end again, half-closes as it does for its own clients */
            client_parse(d, c);
            want_back(d, c, "eof");
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        client_close(d, c);
        return;
    }
    client_parse(d, c);
}

/* A client that wants to go back and owes nothing: its socket and unread bytes go to Python. */
static void try_handback(dp_t *d, client_t *c, const char *reason) {
    if (c->head || buf_size(&c->out) || c->fd < 0) return;
    handback_t *h = calloc(1, sizeof *h);
    if (h == NULL) return;
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    h->fd = c->fd;
    h->id = c->id;
    h->wrote = c->wrote;
    h->bounces = c->bounces;
    snprintf(h->reason, sizeof h->reason, "%s", reason);
    size_t n = buf_size(&c->in);
    if (n) {
        h->data = malloc(n);
        if (h->data) {
            memcpy(h->data, c->in.p + c->in.off, n);
            h->len = n;
        }
    }
    c->fd = -1;
    atomic_fetch_add(&d->n_back, 1);
    queue_back(d, h);
    c->type = 0;                    /* freed when the dirty list is walked */
}

/* --------------------------------------------------------- control (Python) */
static void up_fail(dp_t *d, upstream_t *u, const char *why);

static void apply_permit(dp_t *d, permit_t *p) {
    permit_free(&d->permit);
    d->permit = *p;
    memset(p, 0, sizeof *p);
    for (int v = 0; v < 2; v++) {
        d->master[v] = d->permit.master[0] ? up_get(d, d->permit.master, v) : NULL;
        if (d->master[v]) snprintf(d->master[v]->connect_to, ADDR_LEN, "%s", d->permit.master_at);
    }
    d->nrep = 0;
    for (int i = 0; i < d->permit.nrep && d->nrep < MAX_NODES; i++) {
        if (strcmp(d->permit.replicas[i], d->permit.master) == 0) continue;
        upstream_t *u2 = up_get(d, d->permit.replicas[i], 0), *u3 = up_get(d, d->permit.replicas[i], 1);
        if (u2 == NULL || u3 == NULL) continue;     /* (the connection table is full) */
        snprintf(u2->connect_to, ADDR_LEN, "%s", d->permit.replicas_at[i]);
        snprintf(u3->connect_to, ADDR_LEN, "%s", d->permit.replicas_at[i]);
        d->replicas[0][d->nrep] = u2;
        d->replicas[1][d->nrep] = u3;
        d->caught[d->nrep] = d->permit.caught[i];
        d->fit_until[d->nrep++] = d->permit.fit_until[i];
    }
    d->suspended = 1;               /* recheck every kept-back write against it */
    for (int i = 0; i < d->nups; i++)
        if (d->ups[i]->unsent_write) mark_up(d, d->ups[i]);
    for (client_t *c = d->all; c; c = c->all_next)
        if (c->waiting || (!c->want_back && buf_size(&c->in))) mark_client(d, c);
}

/* The permit Python pushed last, if the thread has not applied it yet (under mu). */
static int take_permit_locked(dp_t *d, permit_t *p) {
    if (!d->permit_changed) return 0;
    *p = d->next_permit;
    memset(&d->next_permit, 0, sizeof d->next_permit);
    d->permit_changed = 0;
    return 1;
}

static void take_control(dp_t *d) {
    uint64_t v;
    ssize_t ignored = read(d->ctl_fd, &v, sizeof v);
    (void)ignored;
    pthread_mutex_lock(&d->mu);
    pending_adopt_t *adopts = d->adopts;
    d->adopts = NULL;
    permit_t p;
    int changed = take_permit_locked(d, &p);
    int recall = d->recall;
    d->recall = 0;
    uint64_t *kills = d->kills;
    size_t nkills = d->nkills;
    d->kills = NULL;
    d->nkills = d->kills_cap = 0;
    pthread_mutex_unlock(&d->mu);
    if (changed) apply_permit(d, &p);
    /* adopted in the order they came */
    pending_adopt_t *rev = NULL;
    while (adopts) {
        pending_adopt_t *n = adopts->next;
        adopts->next = rev;
        rev = adopts;
        adopts = n;
    }
    while (rev) {
        pending_adopt_t *a = rev;
        rev = rev->next;
        client_t *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(a->fd);
        } else {
            c->type = T_CLIENT;
            c->fd = a->fd;
            c->id = a->id;
            c->bounces = a->bounces;
            c->resp3 = a->resp3;
            c->wrote = a->wrote_at > 0;
            c->last_write_done = a->wrote_at;
            c->reading = 1;
            c->active = d->now;
            c->last_entry = -1;
            if (a->len) buf_append(&c->in, a->data, a->len);
            pthread_mutex_lock(&d->mu);
            c->all_next = d->all;
            if (d->all) d->all->all_prev = c;
            d->all = c;
            pthread_mutex_unlock(&d->mu);
            atomic_fetch_add(&d->n_clients, 1);
            atomic_fetch_add(&d->n_adopted, 1);
            ep_set(d, c->fd, c, EPOLLIN, 1);
            if (buf_size(&c->in)) mark_client(d, c);
        }
        free(a->data);
        free(a);
    }
    /* (after the adoptions: a client killed as it came is killed too) */
    for (client_t *c = d->all; c && nkills; c = c->all_next)
        for (size_t i = 0; i < nkills; i++)
            if (kills[i] == c->id && c->type == T_CLIENT && c->fd >= 0) {
                client_close(d, c);     /* at once, what it is owed dropped, as Redis frees it */
                break;
            }
    free(kills);
    if (recall)
        for (client_t *c = d->all; c; c = c->all_next) want_back(d, c, "recall");
}

/* ------------------------------------------------------------ the thread */
static void *run(void *arg) {
    dp_t *d = arg;
    struct epoll_event evs[256];
    for (;;) {
        pthread_mutex_lock(&d->mu);
        int stop = d->stop;
        d->wake_to_renew = d->suspended || d->held;
        int pending = d->permit_changed;    /* (pushed quietly while this round held something) */
        pthread_mutex_unlock(&d->mu);
        if (stop) break;
        int timeout = d->suspended || d->held ? (pending ? 0 : 10) : 1000;
        int n = epoll_wait(d->epfd, evs, 256, timeout);
        d->now = mono();
        /* a renewal pushed without waking this thread (FastPath_set_permit) applies before
         * anything this round does */
        permit_t renewed;
        pthread_mutex_lock(&d->mu);
        int renew = take_permit_locked(d, &renewed);
        pthread_mutex_unlock(&d->mu);
        if (renew) apply_permit(d, &renewed);
        for (int i = 0; i < n; i++) {
            int *tag = evs[i].data.ptr;
            uint32_t ev = evs[i].events;
            if (*tag == T_CTL) {
                take_control(d);
            } else if (*tag == T_CLIENT) {
                client_t *c = (client_t *)tag;
                if ((ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLIN)) {
                    client_close(d, c);     /* reset or gone both ways: nothing can reach it */
                    continue;
                }
                if (ev & EPOLLOUT) client_flush(d, c);
                if (c->type == T_CLIENT && c->fd >= 0 && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                    client_readable(d, c);
            } else if (*tag == T_UP) {
                upstream_t *u = (upstream_t *)tag;
                if (ev & EPOLLOUT) up_writable(d, u);
                if (u->fd >= 0 && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                    if (u->state == U_CONNECTING && (ev & (EPOLLHUP | EPOLLERR)) && !(ev & EPOLLIN)) {
                        up_fail(d, u, "unreachable");
                    } else if (u->state != U_CONNECTING) {
                        up_readable(d, u);
                    }
                }
            }
            /* a tag freed in this round is never dereferenced: clients are freed only below */
        }
        d->now = mono();            /* the permit's deadline is checked again as the bytes leave */
        if (d->suspended) recheck_suspended(d);
        if (d->held)        /* their hold_s may have passed */
            for (int i = 0; i < d->nups; i++)
                if (d->ups[i]->held_since > 0) mark_up(d, d->ups[i]);
        /* whatever a round queued leaves in one write per node and per client */
        while (d->dirty_clients || d->dirty_ups) {
            client_t *c = d->dirty_clients;
            d->dirty_clients = NULL;
            while (c) {
                client_t *next = c->dirty_next;    /* c->dirty stays set: c cannot be queued twice */
                if (c->type == T_CLIENT && c->fd >= 0) {
                    if (c->waiting == 0 && !c->want_back && buf_size(&c->in)) client_parse(d, c);
                    if (c->type == T_CLIENT && c->fd >= 0) client_flush(d, c);
                    if (c->type == T_CLIENT && c->fd >= 0 && c->want_back) try_handback(d, c, c->back_reason ? c->back_reason : "?");
                    else if (c->type == T_CLIENT && c->fd >= 0 && !c->reading && !c->want_back && !c->waiting &&
                             c->nslots < MAX_SLOTS_PER_CLIENT) {
                        c->reading = 1;
                        client_events(d, c);
                    }
                }
                if (c->type != T_CLIENT) client_free(d, c);
                else c->dirty = 0;
                c = next;
            }
            upstream_t *u = d->dirty_ups;
            d->dirty_ups = NULL;
            while (u) {
                upstream_t *next = u->dirty_next;
                u->dirty = 0;
                up_flush(d, u);
                u = next;
            }
        }
    }
    return NULL;
}

/* Clients are freed only from the dirty walk: a closed one is marked dirty first. */

/* ------------------------------------------------------------ Python type */
typedef struct {
    PyObject_HEAD
    dp_t *d;
} FastPath;

static void dp_destroy(dp_t *d) {
    if (d == NULL) return;
    if (d->started) {
        pthread_mutex_lock(&d->mu);
        d->stop = 1;
        pthread_mutex_unlock(&d->mu);
        uint64_t one = 1;
        ssize_t ignored = write(d->ctl_fd, &one, sizeof one);
        (void)ignored;
        pthread_join(d->thread, NULL);
    }
    for (client_t *c = d->all; c;) {
        client_t *next = c->all_next;
        if (c->fd >= 0) close(c->fd);
        for (slot_t *s = c->head; s;) {
            slot_t *sn = s->cnext;
            if ((s->done || s->remaining == 0) && s->gate == NULL) slot_free(s);
            else s->c = NULL;       /* (a gated one is freed with its WAIT's slot) */
            s = sn;
        }
        buf_free(&c->in);
        buf_free(&c->out);
        free(c);
        c = next;
    }
    for (int i = 0; i < d->nups; i++) {
        upstream_t *u = d->ups[i];
        if (u->fd >= 0) close(u->fd);
        for (slot_t *s = u->head; s; s = s->unext)      /* gated slots in no FIFO: only a WAIT's knows them */
            for (int k = 0; s->is_gate && k < s->nheld; k++)
                if (s->held[k]->remaining == 0) slot_free(s->held[k]);
        for (slot_t *s = u->head; s;) {
            slot_t *sn = s->unext;
            slot_free(s);
            s = sn;
        }
        free(u->window);
        buf_free(&u->in);
        buf_free(&u->out);
        free(u);
    }
    for (pending_adopt_t *a = d->adopts; a;) {
        pending_adopt_t *n = a->next;
        close(a->fd);
        free(a->data);
        free(a);
        a = n;
    }
    for (node_lost_t *l = d->lost; l;) {
        node_lost_t *n = l->next;
        free(l);
        l = n;
    }
    free(d->kills);
    for (handback_t *h = d->backs; h;) {
        handback_t *n = h->next;
        if (h->fd >= 0) close(h->fd);
        free(h->data);
        free(h);
        h = n;
    }
    permit_free(&d->permit);
    permit_free(&d->next_permit);
    permit_free(&d->pushed);
    free(d->handshake[0]);
    free(d->handshake[1]);
    if (d->epfd >= 0) close(d->epfd);
    if (d->ctl_fd >= 0) close(d->ctl_fd);
    if (d->back_fd >= 0) close(d->back_fd);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static void FastPath_dealloc(FastPath *self) {
    dp_t *d = self->d;
    self->d = NULL;
    Py_BEGIN_ALLOW_THREADS
    dp_destroy(d);
    Py_END_ALLOW_THREADS
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int FastPath_init(FastPath *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"commands", "max_bulk", "max_args", "output_limit", "handshake", "handshake_replies",
                             "latency_bounds", NULL};
    PyObject *commands;
    long long max_bulk, max_args, output_limit;
    Py_buffer hs;
    int hs_replies;
    PyObject *bounds = NULL;
    if (self->d) {
        PyErr_SetString(PyExc_RuntimeError, "FastPath is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!LLLy*i|O", kwlist, &PyDict_Type, &commands, &max_bulk, &max_args,
                                     &output_limit, &hs, &hs_replies, &bounds))
        return -1;
    dp_t *d = calloc(1, sizeof *d);
    if (d == NULL) {
        PyBuffer_Release(&hs);
        PyErr_NoMemory();
        return -1;
    }
    d->epfd = d->ctl_fd = d->back_fd = -1;
    pthread_mutex_init(&d->mu, NULL);
    d->ctl_tag = T_CTL;
    d->max_bulk = max_bulk;
    d->max_args = max_args;
    d->output_limit = output_limit > 0 ? (size_t)output_limit : 0;
    static const char hello3[] = "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
    for (int v = 0; v < 2; v++) {
        size_t len = (size_t)hs.len + (v ? sizeof hello3 - 1 : 0);
        d->handshake_replies[v] = hs_replies + v;
        d->handshake[v] = len ? malloc(len) : NULL;
        if (len && d->handshake[v] == NULL) {
            PyBuffer_Release(&hs);
            dp_destroy(d);
            PyErr_NoMemory();
            return -1;
        }
        if (hs.len) memcpy(d->handshake[v], hs.buf, (size_t)hs.len);
        if (v) memcpy(d->handshake[v] + hs.len, hello3, sizeof hello3 - 1);
        d->handshake_len[v] = len;
    }
    PyBuffer_Release(&hs);
    if (bounds != NULL && bounds != Py_None) {
        PyObject *seq = PySequence_Fast(bounds, "latency_bounds: a sequence of seconds");
        Py_ssize_t nb = seq ? PySequence_Fast_GET_SIZE(seq) : -1;
        for (Py_ssize_t i = 0; seq && i < nb && i < MAX_BOUNDS; i++)
            d->bounds[d->nbounds++] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        Py_XDECREF(seq);
        if (PyErr_Occurred()) {
            dp_destroy(d);
            return -1;
        }
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(commands, &pos, &key, &value)) {
        long kind = PyLong_AsLong(value);
        if (!PyBytes_Check(key) || (kind != K_READ && kind != K_WRITE)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "commands: bytes name -> 1 (read) or 2 (write)");
            dp_destroy(d);
            return -1;
        }
        if (table_put(d, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), (int)kind) < 0) {
            PyErr_SetString(PyExc_ValueError, "commands: table full");
            dp_destroy(d);
            return -1;
        }
    }
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->ctl_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    d->back_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->epfd < 0 || d->ctl_fd < 0 || d->back_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        dp_destroy(d);
        return -1;
    }
    ep_set(d, d->ctl_fd, &d->ctl_tag, EPOLLIN, 1);
    d->now = mono();
    if (pthread_create(&d->thread, NULL, run, d) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot start the data plane thread");
        dp_destroy(d);
        return -1;
    }
    pthread_setname_np(d->thread, "rrp-dataplane");   /* (top -H, /proc/PID/task/TID/comm) */
    d->started = 1;
    self->d = d;
    return 0;
}

static dp_t *live(FastPath *self) {
    if (self->d == NULL) PyErr_SetString(PyExc_RuntimeError, "FastPath is closed");
    return self->d;
}

static void signal_thread(dp_t *d) {
    uint64_t one = 1;
    ssize_t ignored = write(d->ctl_fd, &one, sizeof one);
    (void)ignored;
}

/* adopt(fd, client_id, data=b"", bounces=0, resp3=False, wrote_at=0.0): the thread owns `fd` from now
 * on; a RESP3 client's commands go on the thread's RESP3 connections; `wrote_at`, the time.monotonic()
 * its last write was answered in Python (read-your-writes goes on from there). */
static PyObject *FastPath_adopt(FastPath *self, PyObject *args) {
    int fd;
    unsigned long long id;
    Py_buffer data = {0};
    int bounces = 0, resp3 = 0;
    double wrote_at = 0.0;
    if (!PyArg_ParseTuple(args, "iK|y*ipd", &fd, &id, &data, &bounces, &resp3, &wrote_at)) return NULL;
    dp_t *d = live(self);
    if (d == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    pending_adopt_t *a = calloc(1, sizeof *a);
    if (a == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    a->fd = fd;
    a->id = id;
    a->bounces = bounces;
    a->resp3 = resp3;
    a->wrote_at = wrote_at;
    if (data.buf && data.len) {
        a->data = malloc((size_t)data.len);
        if (a->data) {
            memcpy(a->data, data.buf, (size_t)data.len);
            a->len = (size_t)data.len;
        }
    }
    PyBuffer_Release(&data);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_mutex_lock(&d->mu);
    a->next = d->adopts;
    d->adopts = a;
    pthread_mutex_unlock(&d->mu);
    signal_thread(d);
    Py_RETURN_NONE;
}

static char *dup_bytes(PyObject *b, size_t *len) {
    *len = (size_t)PyBytes_GET_SIZE(b);
    char *p = malloc(*len ? *len : 1);
    if (p) memcpy(p, PyBytes_AS_STRING(b), *len);
    return p;
}

/* set_permit(gen, master, master_at, replicas [(addr, addr_at, caught, fit_until)], write_ok, read_ok,
 *            deadline, read_master, read_your_writes, retire_reply, lapse_reply, hold_s, stopped,
 *            wait_cmd, noreplica_reply)   (wait_cmd b"": ack = async) */
static PyObject *FastPath_set_permit(FastPath *self, PyObject *args) {
    unsigned long long gen;
    const char *master, *master_at;
    PyObject *replicas, *retire, *lapse, *wait_cmd, *noreplica;
    int write_ok, read_ok, read_master, rw, stopped;
    double deadline, hold_s;
    if (!PyArg_ParseTuple(args, "KssO!ppdppSSdpSS", &gen, &master, &master_at, &PyList_Type, &replicas, &write_ok,
                          &read_ok, &deadline, &read_master, &rw, &retire, &lapse, &hold_s, &stopped, &wait_cmd,
                          &noreplica))
        return NULL;
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    permit_t p = {0};
    p.gen = gen;
    snprintf(p.master, sizeof p.master, "%s", master);
    snprintf(p.master_at, sizeof p.master_at, "%s", master_at);
    Py_ssize_t n = PyList_GET_SIZE(replicas);
    for (Py_ssize_t i = 0; i < n && p.nrep < MAX_NODES; i++) {
        const char *s, *at;
        double caught, fit_until;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(replicas, i), "ssdd", &s, &at, &caught, &fit_until)) return NULL;
        snprintf(p.replicas[p.nrep], ADDR_LEN, "%s", s);
        snprintf(p.replicas_at[p.nrep], ADDR_LEN, "%s", at);
        p.caught[p.nrep] = caught;
        p.fit_until[p.nrep++] = fit_until;
    }
    p.write_ok = write_ok;
    p.read_ok = read_ok;
    p.deadline = deadline;
    p.read_master = read_master;
    p.rw = rw;
    p.hold_s = hold_s;
    p.stopped = stopped;
    p.retire_reply = dup_bytes(retire, &p.retire_len);
    p.lapse_reply = dup_bytes(lapse, &p.lapse_len);
    p.wait_cmd = dup_bytes(wait_cmd, &p.wait_len);
    p.noreplica_reply = dup_bytes(noreplica, &p.noreplica_len);
    if (p.retire_reply == NULL || p.lapse_reply == NULL || p.wait_cmd == NULL || p.noreplica_reply == NULL) {
        permit_free(&p);
        return PyErr_NoMemory();
    }
    /* what the comparison with the next push needs of this one (its replies' bytes are
     * compared, so kept: a copy) */
    permit_t keep = p;
    keep.retire_reply = dup_bytes(retire, &keep.retire_len);
    keep.lapse_reply = dup_bytes(lapse, &keep.lapse_len);
    keep.wait_cmd = dup_bytes(wait_cmd, &keep.wait_len);
    keep.noreplica_reply = dup_bytes(noreplica, &keep.noreplica_len);
    pthread_mutex_lock(&d->mu);
    int quiet = keep.retire_reply && keep.lapse_reply && keep.wait_cmd && keep.noreplica_reply &&
                d->pushed.retire_reply && !d->wake_to_renew && renews(&d->pushed, &p);
    permit_free(&d->pushed);
    d->pushed = keep;
    permit_free(&d->next_permit);
    d->next_permit = p;
    d->permit_changed = 1;
    pthread_mutex_unlock(&d->mu);
    if (!quiet) signal_thread(d);
    Py_RETURN_NONE;
}

/* recall(): every client goes back to Python once it owes nothing. */
static PyObject *FastPath_recall(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    pthread_mutex_lock(&d->mu);
    d->recall = 1;
    pthread_mutex_unlock(&d->mu);
    signal_thread(d);
    Py_RETURN_NONE;
}

/* take_back() -> [(fd, client_id, unread bytes, wrote, reason, bounces)]: clients handed back, and
 * clients the thread closed (fd -1, reason "closed"), in the order it let them go. */
static PyObject *FastPath_take_back(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    uint64_t v;
    ssize_t ignored = read(d->back_fd, &v, sizeof v);
    (void)ignored;
    pthread_mutex_lock(&d->mu);
    handback_t *h = d->backs;
    d->backs = d->backs_tail = NULL;
    pthread_mutex_unlock(&d->mu);
    PyObject *out = PyList_New(0);
    while (h) {
        handback_t *next = h->next;
        PyObject *t = out ? Py_BuildValue("(iKy#isi)", h->fd, (unsigned long long)h->id, h->data ? h->data : "",
                                          (Py_ssize_t)h->len, h->wrote, h->reason, h->bounces) : NULL;
        if (t == NULL || PyList_Append(out, t) < 0) {
            if (h->fd >= 0) close(h->fd);   /* nowhere to go: the client sees its connection closed */
            Py_CLEAR(out);
        }
        Py_XDECREF(t);
        free(h->data);
        free(h);
        h = next;
    }
    return out;
}

/* clients() -> {client_id: (active, last command or None)}: the clients the thread serves,
 * `active` the time.monotonic() of their last bytes read (CLIENT LIST's idle). */
static PyObject *FastPath_clients(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    pthread_mutex_lock(&d->mu);
    for (client_t *c = d->all; c; c = c->all_next) {
        int entry = atomic_load_explicit(&c->last_entry, memory_order_relaxed);
        double active = atomic_load_explicit(&c->active, memory_order_relaxed);
        PyObject *cmd = entry >= 0 && entry < TABLE_SIZE
                            ? PyBytes_FromStringAndSize(d->table[entry].name, d->table[entry].len)
                            : Py_NewRef(Py_None);
        PyObject *key = PyLong_FromUnsignedLongLong((unsigned long long)c->id);
        PyObject *val = cmd ? Py_BuildValue("(dNnni)", active, cmd,
                                            (Py_ssize_t)atomic_load_explicit(&c->seen_qbuf, memory_order_relaxed),
                                            (Py_ssize_t)atomic_load_explicit(&c->seen_omem, memory_order_relaxed),
                                            atomic_load_explicit(&c->seen_oll, memory_order_relaxed))
                            : NULL;
        int rc = key && val ? PyDict_SetItem(out, key, val) : -1;
        Py_XDECREF(key);
        Py_XDECREF(val);
        if (rc < 0) {
            Py_CLEAR(out);
            break;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return out;
}

/* kill(ids): close these clients at once (CLIENT KILL); each is then reported by
 * take_back() as closed. */
static PyObject *FastPath_kill(FastPath *self, PyObject *arg) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    PyObject *seq = PySequence_Fast(arg, "kill() takes a sequence of client ids");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *ids = n ? calloc((size_t)n, sizeof *ids) : NULL;
    if (n && ids == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ids[i] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) {
            free(ids);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    pthread_mutex_lock(&d->mu);
    int ok = 1;
    if (d->nkills + (size_t)n > d->kills_cap) {
        size_t cap = (d->nkills + (size_t)n) * 2;
        uint64_t *grown = realloc(d->kills, cap * sizeof *grown);
        if (grown == NULL) ok = 0;
        else {
            d->kills = grown;
            d->kills_cap = cap;
        }
    }
    if (ok && n) {
        memcpy(d->kills + d->nkills, ids, (size_t)n * sizeof *ids);
        d->nkills += (size_t)n;
    }
    pthread_mutex_unlock(&d->mu);
    free(ids);
    if (!ok) return PyErr_NoMemory();
    signal_thread(d);
    Py_RETURN_NONE;
}

/* set_limits(max_bulk, max_args, output_limit): the bad-input and output limits from now on
 * (a configuration reloaded on SIGHUP), for every client the thread serves. */
static PyObject *FastPath_set_limits(FastPath *self, PyObject *args) {
    long long max_bulk, max_args, output_limit;
    if (!PyArg_ParseTuple(args, "LLL", &max_bulk, &max_args, &output_limit)) return NULL;
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    d->max_bulk = max_bulk;
    d->max_args = max_args;
    d->output_limit = output_limit > 0 ? (size_t)output_limit : 0;
    Py_RETURN_NONE;
}

/* node_stats() -> {addr: (reads, writes)}: commands the thread sent to each node, ever. */
static PyObject *FastPath_node_stats(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->nups && out; i++) {
        upstream_t *u = d->ups[i];
        unsigned long long r = atomic_load(&u->n_read), w = atomic_load(&u->n_write);
        PyObject *had = PyDict_GetItemString(out, u->addr);     /* (borrowed) the other protocol's */
        if (had) {
            r += PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(had, 0));
            w += PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(had, 1));
        }
        PyObject *val = Py_BuildValue("(KK)", r, w);
        if (val == NULL || PyDict_SetItemString(out, u->addr, val) < 0) Py_CLEAR(out);
        Py_XDECREF(val);
    }
    pthread_mutex_unlock(&d->mu);
    return out;
}

/* latency() -> {1: ([count per bucket, last +Inf], total seconds), 2: (...)}: its read (1) and
 * write (2) batches, from queued to answered, in the latency_bounds' buckets. */
static PyObject *FastPath_latency(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    PyObject *out = PyDict_New();
    for (int w = 0; out && w < 2; w++) {
        PyObject *counts = PyList_New(d->nbounds + 1);
        for (int i = 0; counts && i <= d->nbounds; i++)
            PyList_SET_ITEM(counts, i, PyLong_FromUnsignedLongLong(atomic_load(&d->lat_counts[w][i])));
        PyObject *val = counts ? Py_BuildValue("(Nd)", counts, atomic_load(&d->lat_total_ns[w]) / 1e9) : NULL;
        PyObject *key = PyLong_FromLong(w + 1);
        if (val == NULL || key == NULL || PyDict_SetItem(out, key, val) < 0) Py_CLEAR(out);
        Py_XDECREF(key);
        Py_XDECREF(val);
    }
    return out;
}

/* take_lost() -> [addr]: nodes whose connection from the thread failed since the last call. */
static PyObject *FastPath_take_lost(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    pthread_mutex_lock(&d->mu);
    node_lost_t *l = d->lost;
    d->lost = NULL;
    pthread_mutex_unlock(&d->mu);
    PyObject *out = PyList_New(0);
    while (l) {
        node_lost_t *next = l->next;
        if (out) {
            PyObject *a = PyUnicode_FromString(l->addr);
            if (a == NULL || PyList_Append(out, a) < 0) Py_CLEAR(out);
            Py_XDECREF(a);
        }
        free(l);
        l = next;
    }
    return out;
}

static PyObject *FastPath_fileno(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    return d ? PyLong_FromLong(d->back_fd) : NULL;
}

static PyObject *FastPath_stats(FastPath *self, PyObject *unused) {
    dp_t *d = live(self);
    if (d == NULL) return NULL;
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsKsK}", "reads", (unsigned long long)atomic_load(&d->n_read), "writes",
        (unsigned long long)atomic_load(&d->n_write), "adopted", (unsigned long long)atomic_load(&d->n_adopted),
        "handed_back", (unsigned long long)atomic_load(&d->n_back), "retired_writes",
        (unsigned long long)atomic_load(&d->n_retired), "lapsed_writes",
        (unsigned long long)atomic_load(&d->n_lapsed), "upstream_errors",
        (unsigned long long)atomic_load(&d->n_up_errors), "bytes_in",
        (unsigned long long)atomic_load(&d->n_bytes_in), "bytes_out",
        (unsigned long long)atomic_load(&d->n_bytes_out), "closed_output_limit",
        (unsigned long long)atomic_load(&d->n_closed_output), "clients",
        (unsigned long long)atomic_load(&d->n_clients));
}

static PyObject *FastPath_close(FastPath *self, PyObject *unused) {
    dp_t *d = self->d;
    self->d = NULL;
    Py_BEGIN_ALLOW_THREADS
    dp_destroy(d);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef FastPath_methods[] = {
    {"adopt", (PyCFunction)FastPath_adopt, METH_VARARGS, "Own a client socket from now on."},
    {"set_permit", (PyCFunction)FastPath_set_permit, METH_VARARGS, "Where commands go and whether they may."},
    {"recall", (PyCFunction)FastPath_recall, METH_NOARGS, "Hand every client back once drained."},
    {"take_back", (PyCFunction)FastPath_take_back, METH_NOARGS, "Clients handed back: (fd, id, unread, wrote)."},
    {"take_lost", (PyCFunction)FastPath_take_lost, METH_NOARGS, "Nodes whose connection failed: [addr]."},
    {"clients", (PyCFunction)FastPath_clients, METH_NOARGS, "{client_id: (last active, last command, qbuf, omem, oll)}."},
    {"kill", (PyCFunction)FastPath_kill, METH_O, "Close these clients (ids) at once."},
    {"node_stats", (PyCFunction)FastPath_node_stats, METH_NOARGS, "{addr: (reads, writes)} sent to each node."},
    {"latency", (PyCFunction)FastPath_latency, METH_NOARGS, "{1 read, 2 write: (bucket counts, total s)}."},
    {"set_limits", (PyCFunction)FastPath_set_limits, METH_VARARGS, "max_bulk, max_args, output_limit from now on."},
    {"fileno", (PyCFunction)FastPath_fileno, METH_NOARGS, "Readable when clients were handed back or nodes lost."},
    {"stats", (PyCFunction)FastPath_stats, METH_NOARGS, "Counters."},
    {"close", (PyCFunction)FastPath_close, METH_NOARGS, "Stop the thread; close every socket it owns."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "proxy.dataplane._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastPath_init,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_methods = FastPath_methods,
    .tp_doc = "The C data plane: a thread forwarding plain clients (see the module source).",
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "proxy.dataplane._fastpath", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&FastPathType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&FastPathType);
    if (PyModule_AddObject(m, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(&FastPathType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "READ", K_READ);
    PyModule_AddIntConstant(m, "WRITE", K_WRITE);
    return m;
}
