/*
 * C versions of the per-command loops of proxy/resp.py, and of cluster mode's per-command
 * loops over a pipeline (routing/keyslot.shard_batches_py,
 * session/cluster_fanout.interleave_replies_py).
 *
 * Python spends about a microsecond per bytecode-level step on the machines we
 * measure on, so finding command and reply boundaries one byte-range at a
 * time in Python costs more than redis-server itself takes to execute the
 * command.  These functions do the same work as `resp.split_commands` and
 * `resp.scan_replies` (the reference implementations, which the unit tests
 * compare them with) and never build objects for the bytes they only skip.
 * They run once per client read and once per reply batch, so they take their
 * arguments by METH_FASTCALL and build their result tuples directly (format
 * parsing in PyArg_ParseTuple and Py_BuildValue showed in profiles).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "resp_scan.h"

#define NAME_MAX_LEN 64
#define HEADER_MAX (64 * 1024)

/* A tuple of n new references (stolen); NULL (and every item released) on failure. */
static PyObject *tuple_of(Py_ssize_t n, PyObject **items) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL) {
            for (Py_ssize_t j = 0; j < n; j++) Py_XDECREF(items[j]);
            return NULL;
        }
    }
    PyObject *t = PyTuple_New(n);
    if (t == NULL) {
        for (Py_ssize_t j = 0; j < n; j++) Py_DECREF(items[j]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(t, i, items[i]);
    return t;
}

/* The arguments both functions start with: a bytes-like buffer and an offset into it. */
static int get_buffer(PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "a bytes-like object is required, not '%.100s'", Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static int get_ssize(PyObject *obj, Py_ssize_t *out) {
    Py_ssize_t v = PyLong_AsSsize_t(obj);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

/*
 * split_commands(buf, pos, max_bulk, max_args, kinds, default_kind)
 *   -> (groups, pos, need, error)
 *
 * groups: list of (kind, count, start, end, name, args_at).  Consecutive
 * commands of the same kind are one group; kind 0 (special) is always a
 * group of its own.  Stops at the first incomplete command (need = bytes
 * wanted in all, when known, else 0), at a byte that does not start a
 * multibulk (an inline command: the caller handles it), or at a protocol
 * error (error = the message; pos = the start of the bad command).
 */
static PyObject *split_commands(PyObject *self, PyObject *const *fargs, Py_ssize_t nargs) {
    Py_buffer view;
    Py_ssize_t pos, max_bulk, max_args;
    PyObject *kinds;
    long default_kind;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "split_commands expected 6 arguments, got %zd", nargs);
        return NULL;
    }
    if (!PyDict_Check(fargs[4])) {
        PyErr_SetString(PyExc_TypeError, "split_commands: kinds must be a dict");
        return NULL;
    }
    kinds = fargs[4];
    default_kind = PyLong_AsLong(fargs[5]);
    if (default_kind == -1 && PyErr_Occurred()) return NULL;
    if (get_ssize(fargs[1], &pos) < 0 || get_ssize(fargs[2], &max_bulk) < 0 || get_ssize(fargs[3], &max_args) < 0)
        return NULL;
    if (get_buffer(fargs[0], &view) < 0) return NULL;
    if (pos < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "split_commands: negative pos");
        return NULL;
    }
    const char *base = (const char *)view.buf;
    const char *end = base + view.len;
    PyObject *groups = PyList_New(0);
    const char *error = NULL;
    Py_ssize_t error_len = -1;      /* -1: a C string (the quoted byte may be a NUL) */
    Py_ssize_t need = 0;
    char prev_name[NAME_MAX_LEN];
    Py_ssize_t prev_len = -1;
    long prev_kind = -1;
    long g_kind = -1, g_count = 0;
    Py_ssize_t g_start = 0, g_end = 0, g_args = 0;
    PyObject *g_name = NULL;          /* owned */

#define FLUSH_GROUP() do { \
        if (g_count) { \
            PyObject *items[6] = {PyLong_FromLong(g_kind), PyLong_FromSsize_t((Py_ssize_t)g_count), \
                                  PyLong_FromSsize_t(g_start), PyLong_FromSsize_t(g_end), g_name, \
                                  PyLong_FromSsize_t(g_args)}; \
            g_name = NULL;                  /* the tuple owns it (or it was released) */ \
            PyObject *t = tuple_of(6, items); \
            if (t == NULL || PyList_Append(groups, t) < 0) { Py_XDECREF(t); goto fail; } \
            Py_DECREF(t); \
            g_count = 0; \
        } } while (0)

    while (base + pos < end) {
        const char *p = base + pos;
        if (*p != '*') break;                       /* inline command: the caller's job */
        const char *nl = find_crlf(p, end);
        if (nl == NULL) {
            if (end - p > HEADER_MAX) error = "too big mbulk count string";
            break;
        }
        long long argc;
        if (p[1] == '-') {
            argc = parse_len(p + 2, nl) >= 0 ? 0 : -1;
        } else {
            argc = parse_len(p + 1, nl);
        }
        if (argc < 0 || argc > max_args) { error = "invalid multibulk length"; break; }
        const char *q = nl + 2;
        const char *name = NULL;
        Py_ssize_t name_len = 0;
        const char *args_at = q;
        int incomplete = 0;
        for (long long i = 0; i < argc; i++) {
            if (q >= end) { incomplete = 1; break; }
            if (*q != '$') {
                static char msg[64];
                error_len = snprintf(msg, sizeof msg, "expected '$', got '%c'", *q);
                error = msg;
                break;
            }
            nl = find_crlf(q, end);
            if (nl == NULL) {
                if (end - q > HEADER_MAX) error = "too big bulk count string";
                incomplete = 1;
                break;
            }
            long long blen = parse_len(q + 1, nl);
            if (blen < 0 || blen > max_bulk) { error = "invalid bulk length"; break; }
            const char *start = nl + 2;
            const char *after = start + blen + 2;
            if (after > end) {
                need = (Py_ssize_t)(after - base);
                incomplete = 1;
                break;
            }
            if (after[-2] != '\r' || after[-1] != '\n') { error = "bulk string not terminated by CRLF"; break; }
            if (i == 0) { name = start; name_len = (Py_ssize_t)blen; args_at = after; }
            q = after;
        }
        if (error || incomplete) break;
        Py_ssize_t cmd_end = (Py_ssize_t)(q - base);
        if (argc == 0) { pos = cmd_end; continue; }  /* empty command: ignored, like Redis */
        char lower[NAME_MAX_LEN];
        Py_ssize_t n = name_len <= NAME_MAX_LEN ? name_len : NAME_MAX_LEN;
        for (Py_ssize_t k = 0; k < n; k++) {
            char c = name[k];
            lower[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        long kind;
        if (name_len > NAME_MAX_LEN) {
            kind = default_kind;
        } else if (n == prev_len && memcmp(prev_name, lower, n) == 0) {
            kind = prev_kind;                       /* same name as the last command: no lookup */
        } else {
            PyObject *key = PyBytes_FromStringAndSize(lower, n);
            if (key == NULL) goto fail;
            PyObject *v = PyDict_GetItemWithError(kinds, key);
            Py_DECREF(key);
            if (v == NULL && PyErr_Occurred()) goto fail;
            kind = v ? PyLong_AsLong(v) : default_kind;
            memcpy(prev_name, lower, n);
            prev_len = n;
            prev_kind = kind;
        }
        /* kind 0 (special) commands are groups of their own */
        if (kind == 0 || kind != g_kind || g_kind == 0) {
            FLUSH_GROUP();
            g_kind = kind;
            g_start = pos;
            g_args = (Py_ssize_t)(args_at - base);
            g_name = PyBytes_FromStringAndSize(lower, n);
            if (g_name == NULL) goto fail;
        }
        g_count++;
        g_end = cmd_end;
        pos = cmd_end;
    }
    FLUSH_GROUP();
    PyBuffer_Release(&view);
    /* latin-1: the message may quote one byte of the client's, any byte (resp.py uses chr()) */
    PyObject *err = error ? PyUnicode_DecodeLatin1(error, error_len >= 0 ? error_len : (Py_ssize_t)strlen(error), NULL)
                          : Py_NewRef(Py_None);
    PyObject *items[4] = {groups, PyLong_FromSsize_t(pos), PyLong_FromSsize_t(need), err};
    return tuple_of(4, items);
fail:
    Py_XDECREF(g_name);
    Py_DECREF(groups);
    PyBuffer_Release(&view);
    return NULL;
#undef FLUSH_GROUP
}

/* The exception scan_replies raises on bytes that are not RESP: resp.ReplyError once
 * resp.py registered it (set_reply_error), so callers need no Python wrapper. */
static PyObject *reply_error = NULL;

static PyObject *set_reply_error(PyObject *self, PyObject *cls) {
    if (!PyExceptionClass_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "set_reply_error expects an exception class");
        return NULL;
    }
    Py_XSETREF(reply_error, Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* scan_replies(buf, pos, remaining) -> (pos, remaining); see resp.scan_replies. */
static PyObject *scan_replies(PyObject *self, PyObject *const *fargs, Py_ssize_t nargs) {
    Py_buffer view;
    Py_ssize_t pos;
    long long remaining;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "scan_replies expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    if (get_ssize(fargs[1], &pos) < 0) return NULL;
    remaining = PyLong_AsLongLong(fargs[2]);
    if (remaining == -1 && PyErr_Occurred()) return NULL;
    if (get_buffer(fargs[0], &view) < 0) return NULL;
    if (pos < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan_replies: negative pos");
        return NULL;
    }
    const char *base = (const char *)view.buf;
    const char *end = base + view.len;
    size_t at = (size_t)pos;
    while (remaining > 0) {
        int stepped = resp_step(base, end, &at, &remaining);
        if (stepped < 0) {
            pos = (Py_ssize_t)at;
            goto bad;
        }
        if (stepped == 0) break;
    }
    pos = (Py_ssize_t)at;
    PyBuffer_Release(&view);
    PyObject *items[2] = {PyLong_FromSsize_t(pos), PyLong_FromLongLong(remaining)};
    return tuple_of(2, items);
bad:
    PyBuffer_Release(&view);
    PyErr_Format(reply_error ? reply_error : PyExc_ValueError, "unexpected reply at offset %zd", pos);
    return NULL;
}

/* CRC16-CCITT (XMODEM), as Redis Cluster hashes keys (routing/keyslot.py). */
static unsigned short crc16_table[256];

static void crc16_init(void) {
    for (int byte = 0; byte < 256; byte++) {
        unsigned crc = (unsigned)byte << 8;
        for (int k = 0; k < 8; k++) crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        crc16_table[byte] = (unsigned short)(crc & 0xFFFF);
    }
}

/* The hash slot of `key`: of its hash tag when it has a non-empty one (keyslot.key_slot). */
static long key_hash_slot(const char *key, Py_ssize_t n) {
    const char *open = memchr(key, '{', (size_t)n);
    if (open != NULL) {
        const char *close = memchr(open + 1, '}', (size_t)(key + n - open - 1));
        if (close != NULL && close > open + 1) {
            key = open + 1;
            n = close - open - 1;
        }
    }
    unsigned crc = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        crc = ((crc << 8) & 0xFFFF) ^ crc16_table[((crc >> 8) ^ (unsigned char)key[i]) & 0xFF];
    return (long)(crc & 16383);
}

/* What parse_keyed remembers between commands: the last name found in `names`. */
typedef struct {
    char name[NAME_MAX_LEN];
    Py_ssize_t len;
} name_cache_t;

/*
 * One command of a run at p (< end): 1 with *cmd_end and *slot (its argument 1's hash
 * slot) when it is a well-formed command of `names` with that argument, 0 when it is not,
 * -1 on a Python error.
 */
static int parse_keyed(const char *p, const char *end, PyObject *names, name_cache_t *cache,
                       const char **cmd_end, long *slot) {
    if (*p != '*') return 0;
    const char *nl = find_crlf(p, end);
    if (nl == NULL) return 0;
    long long argc = parse_len(p + 1, nl);
    if (argc < 2) return 0;
    const char *q = nl + 2;
    for (long long i = 0; i < argc; i++) {
        if (q >= end || *q != '$') return 0;
        nl = find_crlf(q, end);
        if (nl == NULL) return 0;
        long long blen = parse_len(q + 1, nl);
        const char *arg = nl + 2;
        if (blen < 0 || blen > end - arg - 2 || arg[blen] != '\r' || arg[blen + 1] != '\n') return 0;
        if (i == 0) {
            if (blen > NAME_MAX_LEN) return 0;
            char lower[NAME_MAX_LEN];
            for (long long k = 0; k < blen; k++) {
                char c = arg[k];
                lower[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
            }
            if (blen != cache->len || memcmp(cache->name, lower, (size_t)blen) != 0) {
                PyObject *name = PyBytes_FromStringAndSize(lower, (Py_ssize_t)blen);
                if (name == NULL) return -1;
                int found = PySet_Contains(names, name);
                Py_DECREF(name);
                if (found <= 0) return found;
                memcpy(cache->name, lower, (size_t)blen);
                cache->len = (Py_ssize_t)blen;
            }
        } else if (i == 1) {
            *slot = key_hash_slot(arg, (Py_ssize_t)blen);
        }
        q = arg + blen + 2;
    }
    *cmd_end = q;
    return 1;
}

#define MAX_BATCHES 64

/*
 * shard_batches(buf, start, end, names, owners, migrating)
 *   -> [(owner, positions, data), ...] or None
 *
 * Cluster mode's pipelines (keyslot.shard_batches_py is the reference): the commands in
 * buf[start:end] (complete multibulks, as split_commands grouped them) by the shard that
 * serves their key, in the order each shard first appears: `owner` its index (owners: an
 * array of signed 16-bit shard indexes by hash slot, -1 for none), `positions` the indexes
 * of its commands in the run, `data` their bytes one after the other.  None when one is not
 * a command of `names` (a set of lower-case names: those whose one key is argument 1) with
 * that argument, its slot is served by no shard or is being migrated (`migrating`: a byte
 * per slot), the run is not well formed, or more than MAX_BATCHES shards would take part.
 */
static PyObject *shard_batches(PyObject *self, PyObject *const *fargs, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "shard_batches expected 6 arguments, got %zd", nargs);
        return NULL;
    }
    if (!PyAnySet_Check(fargs[3])) {
        PyErr_SetString(PyExc_TypeError, "shard_batches: names must be a set");
        return NULL;
    }
    Py_ssize_t start, stop;
    if (get_ssize(fargs[1], &start) < 0 || get_ssize(fargs[2], &stop) < 0) return NULL;
    Py_buffer view, own, mig;
    if (get_buffer(fargs[0], &view) < 0) return NULL;
    if (get_buffer(fargs[4], &own) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (get_buffer(fargs[5], &mig) < 0) {
        PyBuffer_Release(&own);
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *out = NULL;
    long owner_of[MAX_BATCHES];
    PyObject *positions[MAX_BATCHES];
    char *bytes[MAX_BATCHES];
    size_t used[MAX_BATCHES], cap[MAX_BATCHES];
    int n = 0;
    if (start < 0 || stop > view.len || start > stop || own.len != 16384 * 2 || mig.len != 16384) {
        PyErr_SetString(PyExc_ValueError, "shard_batches: bad range, owners or migrating");
        goto done;
    }
    const short *owners = (const short *)own.buf;
    const unsigned char *migrating = (const unsigned char *)mig.buf;
    const char *base = (const char *)view.buf;
    const char *end = base + stop;
    const char *p = base + start;
    name_cache_t cache = {.len = -1};
    long index = 0;
    while (p < end) {
        const char *cmd_end;
        long slot = -1;
        int ok = parse_keyed(p, end, fargs[3], &cache, &cmd_end, &slot);
        if (ok < 0) goto done;
        if (ok == 0 || owners[slot] < 0 || migrating[slot]) goto none;
        long owner = owners[slot];
        int b = 0;
        while (b < n && owner_of[b] != owner) b++;
        if (b == n) {
            if (n == MAX_BATCHES) goto none;
            owner_of[n] = owner;
            positions[n] = PyList_New(0);
            bytes[n] = NULL;
            used[n] = cap[n] = 0;
            n++;
            if (positions[b] == NULL) goto done;
        }
        size_t len = (size_t)(cmd_end - p);
        if (used[b] + len > cap[b]) {
            size_t want = cap[b] ? cap[b] * 2 : 256;
            while (want < used[b] + len) want *= 2;
            char *grown = PyMem_Realloc(bytes[b], want);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            bytes[b] = grown;
            cap[b] = want;
        }
        memcpy(bytes[b] + used[b], p, len);
        used[b] += len;
        PyObject *i = PyLong_FromLong(index);
        if (i == NULL || PyList_Append(positions[b], i) < 0) {
            Py_XDECREF(i);
            goto done;
        }
        Py_DECREF(i);
        index++;
        p = cmd_end;
    }
    out = PyList_New(n);
    if (out == NULL) goto done;
    for (int b = 0; b < n; b++) {
        PyObject *items[3] = {PyLong_FromLong(owner_of[b]), Py_NewRef(positions[b]),
                              PyBytes_FromStringAndSize(bytes[b], (Py_ssize_t)used[b])};
        PyObject *t = tuple_of(3, items);
        if (t == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, b, t);
    }
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    for (int b = 0; b < n; b++) {
        Py_XDECREF(positions[b]);
        PyMem_Free(bytes[b]);
    }
    PyBuffer_Release(&mig);
    PyBuffer_Release(&own);
    PyBuffer_Release(&view);
    return out;
}

/* The end of the one reply at pos, or -1 when it is incomplete, -2 when not RESP. */
static Py_ssize_t reply_end(const char *base, Py_ssize_t pos, const char *end) {
    long long nest = 1;
    size_t at = (size_t)pos;
    while (nest > 0) {
        int stepped = resp_step(base, end, &at, &nest);
        if (stepped <= 0) return stepped == 0 ? -1 : -2;
    }
    return (Py_ssize_t)at;
}

static int is_redirect(const char *p, Py_ssize_t n) {
    return (n >= 7 && memcmp(p, "-MOVED ", 7) == 0) || (n >= 5 && memcmp(p, "-ASK ", 5) == 0);
}

/*
 * interleave_replies(raws, positions, count) -> bytes or None
 *
 * The replies of a pipeline's per-shard batches (raws[i]: the replies to the commands at
 * positions[i] of the run, in that order) put back in the run's order, as one bytes; None
 * when one of them is a MOVED or ASK (the caller follows those for their commands alone).
 * ReplyError when a batch's replies are not RESP or fewer than its commands.
 * (cluster_fanout.interleave_replies_py is the reference.)
 */
static PyObject *interleave_replies(PyObject *self, PyObject *const *fargs, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "interleave_replies expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *raws = fargs[0], *positions = fargs[1];
    Py_ssize_t count;
    if (get_ssize(fargs[2], &count) < 0) return NULL;
    if (!PyList_Check(raws) || !PyList_Check(positions) || PyList_GET_SIZE(raws) != PyList_GET_SIZE(positions)
            || count < 0) {
        PyErr_SetString(PyExc_TypeError, "interleave_replies: raws and positions must be lists of one length");
        return NULL;
    }
    const char **at = PyMem_Calloc((size_t)count + 1, sizeof(char *));
    Py_ssize_t *len = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    PyObject *out = NULL;
    if (at == NULL || len == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t b = 0; b < PyList_GET_SIZE(raws); b++) {
        PyObject *raw = PyList_GET_ITEM(raws, b), *pos = PyList_GET_ITEM(positions, b);
        if (!PyBytes_Check(raw) || !PyList_Check(pos)) {
            PyErr_SetString(PyExc_TypeError, "interleave_replies: raws are bytes, positions lists");
            goto done;
        }
        const char *base = PyBytes_AS_STRING(raw), *end = base + PyBytes_GET_SIZE(raw);
        Py_ssize_t off = 0;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(pos); k++) {
            Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(pos, k));
            if (i == -1 && PyErr_Occurred()) goto done;
            if (i < 0 || i >= count || at[i] != NULL) {
                PyErr_SetString(PyExc_ValueError, "interleave_replies: positions out of range or repeated");
                goto done;
            }
            Py_ssize_t e = reply_end(base, off, end);
            if (e < 0) {
                PyErr_Format(reply_error ? reply_error : PyExc_ValueError,
                             e == -1 ? "fewer replies than commands" : "unexpected reply at offset %zd", off);
                goto done;
            }
            if (is_redirect(base + off, e - off)) {
                out = Py_NewRef(Py_None);
                goto done;
            }
            at[i] = base + off;
            len[i] = e - off;
            total += e - off;
            off = e;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (at[i] == NULL) {
            PyErr_SetString(PyExc_ValueError, "interleave_replies: a position has no reply");
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) goto done;
    char *w = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < count; i++) {
        memcpy(w, at[i], (size_t)len[i]);
        w += len[i];
    }
done:
    PyMem_Free(at);
    PyMem_Free(len);
    return out;
}

static PyMethodDef methods[] = {
    {"split_commands", (PyCFunction)(void (*)(void))split_commands, METH_FASTCALL, "Split client bytes into groups of commands."},
    {"scan_replies", (PyCFunction)(void (*)(void))scan_replies, METH_FASTCALL, "Skip complete RESP replies."},
    {"shard_batches", (PyCFunction)(void (*)(void))shard_batches, METH_FASTCALL, "A pipeline's commands by shard."},
    {"interleave_replies", (PyCFunction)(void (*)(void))interleave_replies, METH_FASTCALL,
     "Per-shard replies back in the pipeline's order."},
    {"set_reply_error", set_reply_error, METH_O, "The exception class scan_replies raises on bad bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "proxy._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    crc16_init();
    return PyModule_Create(&module);
}
