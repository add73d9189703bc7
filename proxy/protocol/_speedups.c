/*
 * C versions of the per-command loops of proxy/resp.py (and of cluster mode's
 * routing/keyslot.key_slots_py).
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
    while (remaining > 0 && base + pos < end) {
        const char *p = base + pos;
        const char *nl = find_crlf(p, end);
        if (nl == NULL) break;
        char t = *p;
        if (t == '$' || t == '!' || t == '=') {
            long long size;
            if (p[1] == '-') size = -1;
            else if ((size = parse_len(p + 1, nl)) < 0) goto bad;
            if (size < 0) {
                pos = (Py_ssize_t)(nl + 2 - base);
            } else {
                const char *e = nl + 4 + size;
                if (e > end) break;
                pos = (Py_ssize_t)(e - base);
            }
            remaining--;
        } else if (t == '+' || t == '-' || t == ':' || t == '_' || t == '#' || t == ',' || t == '(') {
            pos = (Py_ssize_t)(nl + 2 - base);
            remaining--;
        } else if (t == '*' || t == '~' || t == '>' || t == '%' || t == '|') {
            long long count;
            if (p[1] == '-') count = -1;
            else if ((count = parse_len(p + 1, nl)) < 0) goto bad;
            pos = (Py_ssize_t)(nl + 2 - base);
            if (t == '%') remaining += 2 * count - 1;
            else if (t == '|') remaining += 2 * count;
            else remaining += count > 0 ? count - 1 : -1;
        } else {
            goto bad;
        }
    }
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

/*
 * key_slots(buf, start, end, names) -> [end0, slot0, end1, slot1, ...] or None
 *
 * The commands in buf[start:end] (complete multibulks, as split_commands grouped them),
 * each with where it ends and the hash slot of its first argument; None as soon as one is
 * not a command of `names` (a frozenset of lower-case names: those whose one key is
 * argument 1) with at least that argument, or is not well formed.  Cluster mode routes a
 * client's pipeline by these without building the arguments (keyslot.key_slots_py is the
 * reference).
 */
static PyObject *key_slots(PyObject *self, PyObject *const *fargs, Py_ssize_t nargs) {
    Py_buffer view;
    Py_ssize_t start, stop;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "key_slots expected 4 arguments, got %zd", nargs);
        return NULL;
    }
    if (!PyAnySet_Check(fargs[3])) {
        PyErr_SetString(PyExc_TypeError, "key_slots: names must be a set");
        return NULL;
    }
    PyObject *names = fargs[3];
    if (get_ssize(fargs[1], &start) < 0 || get_ssize(fargs[2], &stop) < 0) return NULL;
    if (get_buffer(fargs[0], &view) < 0) return NULL;
    if (start < 0 || stop > view.len || start > stop) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "key_slots: range out of the buffer");
        return NULL;
    }
    const char *base = (const char *)view.buf;
    const char *end = base + stop;
    const char *p = base + start;
    PyObject *out = PyList_New(0);
    if (out == NULL) goto fail;
    char prev[NAME_MAX_LEN];
    Py_ssize_t prev_len = -1;
    while (p < end) {
        if (*p != '*') goto none;
        const char *nl = find_crlf(p, end);
        if (nl == NULL) goto none;
        long long argc = parse_len(p + 1, nl);
        if (argc < 2) goto none;
        const char *q = nl + 2;
        long slot = -1;
        for (long long i = 0; i < argc; i++) {
            if (q >= end || *q != '$') goto none;
            nl = find_crlf(q, end);
            if (nl == NULL) goto none;
            long long blen = parse_len(q + 1, nl);
            const char *arg = nl + 2;
            if (blen < 0 || blen > end - arg - 2 || arg[blen] != '\r' || arg[blen + 1] != '\n') goto none;
            if (i == 0) {
                if (blen > NAME_MAX_LEN) goto none;
                char lower[NAME_MAX_LEN];
                for (long long k = 0; k < blen; k++) {
                    char c = arg[k];
                    lower[k] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
                }
                if (blen != prev_len || memcmp(prev, lower, (size_t)blen) != 0) {
                    PyObject *name = PyBytes_FromStringAndSize(lower, (Py_ssize_t)blen);
                    if (name == NULL) goto fail;
                    int found = PySet_Contains(names, name);
                    Py_DECREF(name);
                    if (found < 0) goto fail;
                    if (!found) goto none;
                    memcpy(prev, lower, (size_t)blen);
                    prev_len = (Py_ssize_t)blen;
                }
            } else if (i == 1) {
                slot = key_hash_slot(arg, (Py_ssize_t)blen);
            }
            q = arg + blen + 2;
        }
        PyObject *e = PyLong_FromSsize_t((Py_ssize_t)(q - base));
        if (e == NULL) goto fail;
        int bad = PyList_Append(out, e);
        Py_DECREF(e);
        if (bad < 0) goto fail;
        PyObject *s = PyLong_FromLong(slot);
        if (s == NULL) goto fail;
        bad = PyList_Append(out, s);
        Py_DECREF(s);
        if (bad < 0) goto fail;
        p = q;
    }
    PyBuffer_Release(&view);
    return out;
none:
    Py_DECREF(out);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

static PyMethodDef methods[] = {
    {"split_commands", (PyCFunction)(void (*)(void))split_commands, METH_FASTCALL, "Split client bytes into groups of commands."},
    {"scan_replies", (PyCFunction)(void (*)(void))scan_replies, METH_FASTCALL, "Skip complete RESP replies."},
    {"key_slots", (PyCFunction)(void (*)(void))key_slots, METH_FASTCALL, "Where each command ends, and its key's hash slot."},
    {"set_reply_error", set_reply_error, METH_O, "The exception class scan_replies raises on bad bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "proxy._speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    crc16_init();
    return PyModule_Create(&module);
}
