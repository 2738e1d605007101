/* One C call per invocation phase, instead of ~15 ctypes calls (~1.5 us each).
 *
 * Optional accelerator for flotilla/sandbox/sandbox.py: if this extension is missing, the
 * sandbox makes the same wasmtime C API calls through ctypes. Nothing here links against
 * libwasmtime: `bind` receives the addresses of the C functions from the library wasmtime-py
 * already loaded (so both paths use one copy of wasmtime), and the prototypes below are
 * declared by hand from wasmtime 50's C API (the wheel ships no headers).
 *
 *   start(...)  new store, WASI context, limits, deadline, instantiate, get `handle`, call it
 *               (GIL released for the whole sequence; host callbacks take it back via ctypes)
 *   finish(...) free the result value, post-return, delete the store (GIL released)
 *   fill_u8(addr, data, n) / read_u8(addr, n): a list<u8> as n 32-byte values, in one loop
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef void *(*store_new_t)(void *engine, void *data, void (*finalizer)(void *));
typedef void *(*store_context_t)(void *store);
typedef void (*store_delete_t)(void *store);
typedef void (*store_limiter_t)(void *store, int64_t, int64_t, int64_t, int64_t, int64_t);
typedef void (*set_epoch_deadline_t)(void *context, uint64_t ticks);
typedef void *(*wasi_config_new_t)(void);
typedef bool (*wasi_config_set_env_t)(void *cfg, size_t n, const char *const *names,
                                      const char *const *values);
typedef void (*wasi_config_set_custom_t)(void *cfg, void *callback, void *data, void *finalizer);
typedef void *(*context_set_wasi_t)(void *context, void *cfg);
typedef void *(*linker_instantiate_t)(void *linker, void *context, void *component, void *out);
typedef bool (*instance_get_func_t)(void *instance, void *context, void *index, void *out);
typedef void *(*func_call_t)(void *func, void *context, void *args, size_t nargs, void *results,
                             size_t nresults);
typedef void *(*func_post_return_t)(void *func, void *context);
typedef void (*val_delete_t)(void *val);

static struct {
    store_new_t store_new;
    store_context_t store_context;
    store_delete_t store_delete;
    store_limiter_t store_limiter;
    set_epoch_deadline_t set_epoch_deadline;
    wasi_config_new_t wasi_config_new;
    wasi_config_set_env_t wasi_config_set_env;
    wasi_config_set_custom_t set_stdout;
    wasi_config_set_custom_t set_stderr;
    context_set_wasi_t context_set_wasi;
    linker_instantiate_t linker_instantiate;
    instance_get_func_t instance_get_func;
    func_call_t func_call;
    func_post_return_t func_post_return;
    val_delete_t val_delete;
} W;
static int bound = 0;

/* A wasmtime_component_val_t: kind byte, 7 bytes padding, 24-byte union. */
#define VAL_SIZE 32
#define VAL_PAYLOAD 8
#define MAX_ENV 256

/* Stages reported by start(): where an error came from. */
enum { STAGE_WASI = 1, STAGE_INSTANTIATE = 2, STAGE_GET_FUNC = 3, STAGE_CALL = 4, STAGE_OK = 5,
       STAGE_POST_RETURN = 6 };

static double now(void) {
    /* Same clock as time.perf_counter() on Linux. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static PyObject *bind(PyObject *self, PyObject *args) {
    unsigned long long a[15];
    if (!PyArg_ParseTuple(args, "KKKKKKKKKKKKKKK", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5],
                          &a[6], &a[7], &a[8], &a[9], &a[10], &a[11], &a[12], &a[13], &a[14]))
        return NULL;
    for (int i = 0; i < 15; i++) {
        if (!a[i]) {
            PyErr_Format(PyExc_ValueError, "function address %d is NULL", i);
            return NULL;
        }
    }
    W.store_new = (store_new_t)(uintptr_t)a[0];
    W.store_context = (store_context_t)(uintptr_t)a[1];
    W.store_delete = (store_delete_t)(uintptr_t)a[2];
    W.store_limiter = (store_limiter_t)(uintptr_t)a[3];
    W.set_epoch_deadline = (set_epoch_deadline_t)(uintptr_t)a[4];
    W.wasi_config_new = (wasi_config_new_t)(uintptr_t)a[5];
    W.wasi_config_set_env = (wasi_config_set_env_t)(uintptr_t)a[6];
    W.set_stdout = (wasi_config_set_custom_t)(uintptr_t)a[7];
    W.set_stderr = (wasi_config_set_custom_t)(uintptr_t)a[8];
    W.context_set_wasi = (context_set_wasi_t)(uintptr_t)a[9];
    W.linker_instantiate = (linker_instantiate_t)(uintptr_t)a[10];
    W.instance_get_func = (instance_get_func_t)(uintptr_t)a[11];
    W.func_call = (func_call_t)(uintptr_t)a[12];
    W.func_post_return = (func_post_return_t)(uintptr_t)a[13];
    W.val_delete = (val_delete_t)(uintptr_t)a[14];
    bound = 1;
    Py_RETURN_NONE;
}

/* Component value kinds and layouts (wasmtime_component_val_t: kind byte, 7 bytes of
 * padding, a 24-byte union; a record entry: a 16-byte name vec, then the 32-byte value).
 * fastpath.py checks these against wasmtime-py's ctypes definitions before using us. */
#define K_U8 2
#define K_U16 4
#define K_STRING 12
#define K_LIST 13
#define K_RECORD 14
#define K_TUPLE 15
#define K_RESULT 19
#define ENTRY_SIZE 48
#define ENTRY_VAL 16
#define FIXED_SIZE (VAL_SIZE + 4 * ENTRY_SIZE)
/* Parameter buffers up to this size are kept per thread: allocating and page-faulting 32
 * bytes per body byte afresh costs more than filling them. */
#define KEEP_BYTES (36u * 1024 * 1024)

static __thread unsigned char *tl_buf;
static __thread size_t tl_cap;

static const char *const REQUEST_NAMES[4] = {"invocation-id", "function-name", "headers",
                                             "body"};

static inline void put_vec(unsigned char *at, size_t size, const void *data) {
    memcpy(at, &size, 8);
    memcpy(at + 8, &data, 8);
}

static inline void get_vec(const unsigned char *at, size_t *size, unsigned char **data) {
    memcpy(size, at, 8);
    memcpy(data, at + 8, 8);
}

static inline void put_val(unsigned char *val, unsigned char kind, size_t size,
                           const void *data) {
    val[0] = kind;
    put_vec(val + VAL_PAYLOAD, size, data);
}

/* Lay out the `request` record (strings borrowed from the Python objects, which the caller
 * keeps alive for the call). Returns the buffer (tl_buf, or a malloc'd one to free) or NULL
 * with an exception set. */
static unsigned char *build_request(const char *inv, Py_ssize_t inv_len, const char *fname,
                                    Py_ssize_t fname_len, PyObject *headers,
                                    const Py_buffer *body, int raw) {
    Py_ssize_t nh = PySequence_Fast_GET_SIZE(headers);
    size_t nb = (size_t)body->len;
    const unsigned char *src = body->buf;
    /* raw: the body is one latin1 string, passed to wasmtime as UTF-8 (bytes >= 0x80 take 2) */
    size_t body_size = nb * VAL_SIZE;
    if (raw) {
        body_size = nb;
        for (size_t i = 0; i < nb; i++)
            body_size += src[i] >> 7;
    }
    size_t o_body = FIXED_SIZE, o_tuples = o_body + ((body_size + 15) & ~(size_t)15);
    size_t o_pairs = o_tuples + (size_t)nh * VAL_SIZE;
    size_t total = o_pairs + 2 * (size_t)nh * VAL_SIZE;
    unsigned char *buf = tl_buf;
    if (total > tl_cap) {
        buf = malloc(total);
        if (!buf) {
            PyErr_NoMemory();
            return NULL;
        }
        if (total <= KEEP_BYTES) {
            free(tl_buf);
            tl_buf = buf;
            tl_cap = total;
        }
    }
    put_val(buf, K_RECORD, 4, buf + VAL_SIZE);
    unsigned char *e = buf + VAL_SIZE;
    const size_t name_len[4] = {13, 13, 7, 4};
    for (int i = 0; i < 4; i++)
        put_vec(e + i * ENTRY_SIZE, name_len[i], REQUEST_NAMES[i]);
    put_val(e + ENTRY_VAL, K_STRING, (size_t)inv_len, inv);
    put_val(e + ENTRY_SIZE + ENTRY_VAL, K_STRING, (size_t)fname_len, fname);
    put_val(e + 2 * ENTRY_SIZE + ENTRY_VAL, K_LIST, (size_t)nh, buf + o_tuples);
    if (raw) {
        put_val(e + 3 * ENTRY_SIZE + ENTRY_VAL, K_STRING, body_size, buf + o_body);
        unsigned char *dst = buf + o_body;
        if (body_size == nb) {
            memcpy(dst, src, nb);
        } else {
            for (size_t i = 0; i < nb; i++) {
                unsigned char b = src[i];
                if (b < 0x80) {
                    *dst++ = b;
                } else {
                    *dst++ = (unsigned char)(0xC0 | (b >> 6));
                    *dst++ = (unsigned char)(0x80 | (b & 0x3F));
                }
            }
        }
    } else {
        put_val(e + 3 * ENTRY_SIZE + ENTRY_VAL, K_LIST, nb, buf + o_body);
        unsigned char *slot = buf + o_body;
        for (size_t i = 0; i < nb; i++, slot += VAL_SIZE) {
            slot[0] = K_U8;
            slot[VAL_PAYLOAD] = src[i];
        }
    }
    PyObject **items = PySequence_Fast_ITEMS(headers);
    for (Py_ssize_t j = 0; j < nh; j++) {
        PyObject *pair = items[j];
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "headers must be (name, value) tuples");
            goto fail;
        }
        unsigned char *strs = buf + o_pairs + 2 * (size_t)j * VAL_SIZE;
        put_val(buf + o_tuples + (size_t)j * VAL_SIZE, K_TUPLE, 2, strs);
        for (int k = 0; k < 2; k++) {
            Py_ssize_t len;
            const char *text = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, k), &len);
            if (!text)
                goto fail;
            put_val(strs + k * VAL_SIZE, K_STRING, (size_t)len, text);
        }
    }
    return buf;
fail:
    if (buf != tl_buf)
        free(buf);
    return NULL;
}

/* The bytes a latin1 string stood for, from the UTF-8 wasmtime gives it as (every character
 * is below 0x100: one byte, or two starting 0xC2/0xC3). `out` needs latin1_len(data, n). */
static size_t latin1_len(const unsigned char *data, size_t n) {
    size_t m = n;
    for (size_t i = 0; i < n; i++)
        m -= (data[i] & 0xC0) == 0x80;
    return m;
}

/* Writes exactly latin1_len(data, n) bytes: one per byte that is not a continuation byte
 * (a character above 0xFF, which only a UTF-16-tagged guest string can hold, comes out as
 * garbage but never overruns `out`). */
static void latin1_bytes(const unsigned char *data, size_t n, unsigned char *out) {
    for (size_t i = 0; i < n; i++) {
        unsigned char b = data[i];
        if (b < 0x80) {
            *out++ = b;
        } else if ((b & 0xC0) != 0x80) {
            unsigned char next = i + 1 < n ? data[i + 1] : 0;
            *out++ = (unsigned char)(((b & 0x03) << 6) | (next & 0x3F));
        }
    }
}

static PyObject *string_val(const unsigned char *val, int raw) {
    size_t n;
    unsigned char *data;
    if (val[0] != K_STRING)
        return PyUnicode_FromString("");
    get_vec(val + VAL_PAYLOAD, &n, &data);
    if (!raw)
        return PyUnicode_DecodeUTF8((const char *)data, (Py_ssize_t)n, "replace");
    size_t m = latin1_len(data, n);
    if (m == n)
        return PyUnicode_DecodeUTF8((const char *)data, (Py_ssize_t)n, "replace");
    unsigned char small[256];
    unsigned char *tmp = m <= sizeof small ? small : malloc(m);
    if (!tmp)
        return PyErr_NoMemory();
    latin1_bytes(data, n, tmp);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)tmp, (Py_ssize_t)m, "replace");
    if (tmp != small)
        free(tmp);
    return text;
}

/* (is_ok, status, headers, body, body_len, message) read from handle's result value:
 * is_ok 1: a response (body None when body_len > max_body: the caller rejects it unread);
 * is_ok 0: the guest's err(message); is_ok -1: the value has the wrong shape (message). */
static PyObject *lift_result(const unsigned char *result, Py_ssize_t max_body, int raw) {
    if (result[0] != K_RESULT)
        return Py_BuildValue("iiOOns", -1, 0, Py_None, Py_None, (Py_ssize_t)0,
                             "handle returned a value that is not a result");
    bool is_ok = result[VAL_PAYLOAD] != 0;
    unsigned char *payload;
    memcpy(&payload, result + 16, 8);
    if (!is_ok) {
        PyObject *message = payload ? string_val(payload, raw) : PyUnicode_FromString("");
        if (!message)
            return NULL;
        return Py_BuildValue("iiOOnN", 0, 0, Py_None, Py_None, (Py_ssize_t)0, message);
    }
    size_t nfields;
    unsigned char *entries;
    if (payload)
        get_vec(payload + VAL_PAYLOAD, &nfields, &entries);
    if (!payload || payload[0] != K_RECORD || nfields != 3)
        return Py_BuildValue("iiOOns", -1, 0, Py_None, Py_None, (Py_ssize_t)0,
                             "response record has the wrong shape");
    const unsigned char *f_status = entries + ENTRY_VAL;
    const unsigned char *f_headers = entries + ENTRY_SIZE + ENTRY_VAL;
    const unsigned char *f_body = entries + 2 * ENTRY_SIZE + ENTRY_VAL;
    if (f_status[0] != K_U16 || f_headers[0] != K_LIST || f_body[0] != (raw ? K_STRING : K_LIST))
        return Py_BuildValue("iiOOns", -1, 0, Py_None, Py_None, (Py_ssize_t)0,
                             "response record has the wrong shape");
    uint16_t status;
    memcpy(&status, f_status + VAL_PAYLOAD, 2);
    size_t nh, nb;
    unsigned char *hdata, *bdata;
    get_vec(f_headers + VAL_PAYLOAD, &nh, &hdata);
    get_vec(f_body + VAL_PAYLOAD, &nb, &bdata);
    size_t n_utf8 = nb;
    if (raw)
        nb = latin1_len(bdata, n_utf8);
    if (nb > (size_t)max_body)
        return Py_BuildValue("iiOOns", 1, (int)status, Py_None, Py_None, (Py_ssize_t)nb, NULL);
    PyObject *headers = PyTuple_New((Py_ssize_t)nh);
    if (!headers)
        return NULL;
    for (size_t j = 0; j < nh; j++) {
        size_t two;
        unsigned char *strs;
        get_vec(hdata + j * VAL_SIZE + VAL_PAYLOAD, &two, &strs);
        PyObject *pair = two == 2 ? Py_BuildValue("NN", string_val(strs, raw), string_val(strs + VAL_SIZE, raw))
                                  : NULL;
        if (!pair) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "header is not a pair");
            Py_DECREF(headers);
            return NULL;
        }
        PyTuple_SET_ITEM(headers, (Py_ssize_t)j, pair);
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)nb);
    if (!body) {
        Py_DECREF(headers);
        return NULL;
    }
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(body);
    if (raw) {
        if (nb == n_utf8)
            memcpy(dst, bdata, nb);
        else
            latin1_bytes(bdata, n_utf8, dst);
    } else {
        const unsigned char *src = bdata + VAL_PAYLOAD;
        for (size_t i = 0; i < nb; i++)
            dst[i] = src[i * VAL_SIZE];
    }
    return Py_BuildValue("iiNNnO", 1, (int)status, headers, body, (Py_ssize_t)nb, Py_None);
}

/* invoke(engine, linker, component, handle_index, memory_bytes, ticks,
 *        env_names: tuple[bytes], env_values: tuple[bytes],
 *        invocation_id: str, function_name: str, headers: tuple[tuple[str, str], ...],
 *        body: bytes-like, stdout_fn, stderr_fn, key, finalize_fn, max_body,
 *        raw=False, keep_store=False)
 * -> (stage, error, t_store, t_instantiate, t_call, lifted, t_post_return, store)
 *
 * New store with its WASI context (env + FLOTILLA_INVOCATION_ID, output callbacks carrying
 * `key`), memory limit and epoch deadline; instantiate; call `handle(request)`; read the
 * result (`lifted`, see lift_result; None unless stage is STAGE_OK); free it; post-return;
 * delete the store. `raw`: `handle` is the byte-string
 * export (flotilla/sandbox/rawabi.py): the body crosses as one latin1 string.
 * The GIL is released around the wasmtime calls (host callbacks take it).
 * `error` is a wasmtime_error_t* the caller owns, or 0; `stage` says where it came from.
 * The t_* are perf_counter() values at the end of each phase (0 if not reached); the store
 * teardown follows t_post_return. `keep_store`: a store that reached post-return is not
 * deleted but returned (`store`, else 0), for `drop(store)` once the reply is on its way
 * (the teardown, a memory reset, is then off the caller's path).
 */
static PyObject *invoke(PyObject *self, PyObject *args) {
    unsigned long long engine, linker, component, handle, stdout_fn, stderr_fn, key, finalize;
    unsigned long long ticks;
    long long memory_bytes;
    Py_ssize_t max_body;
    int raw = 0, keep_store = 0;
    PyObject *names, *values, *inv_obj, *fname_obj, *headers_obj;
    Py_buffer body;
    if (!PyArg_ParseTuple(args, "KKKKLKO!O!UUOy*KKKKn|pp", &engine, &linker, &component, &handle,
                          &memory_bytes, &ticks, &PyTuple_Type, &names, &PyTuple_Type, &values,
                          &inv_obj, &fname_obj, &headers_obj, &body, &stdout_fn, &stderr_fn,
                          &key, &finalize, &max_body, &raw, &keep_store))
        return NULL;
    PyObject *headers = NULL, *lifted = NULL;
    unsigned char *params = NULL;
    if (!bound) {
        PyErr_SetString(PyExc_RuntimeError, "_fastcall.bind() was not called");
        goto fail;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n != PyTuple_GET_SIZE(values) + 1 || n > MAX_ENV) {
        PyErr_SetString(PyExc_ValueError, "env: need len(names) == len(values) + 1 <= 256");
        goto fail;
    }
    const char *cnames[MAX_ENV], *cvalues[MAX_ENV];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(names, i);
        PyObject *v = i + 1 < n ? PyTuple_GET_ITEM(values, i) : NULL;
        if (!PyBytes_Check(k) || (v && !PyBytes_Check(v))) {
            PyErr_SetString(PyExc_TypeError, "env names and values must be bytes");
            goto fail;
        }
        cnames[i] = PyBytes_AS_STRING(k);
        if (v)
            cvalues[i] = PyBytes_AS_STRING(v);
    }
    Py_ssize_t inv_len, fname_len;
    const char *inv = PyUnicode_AsUTF8AndSize(inv_obj, &inv_len); /* NUL-terminated */
    const char *fname = PyUnicode_AsUTF8AndSize(fname_obj, &fname_len);
    if (!inv || !fname)
        goto fail;
    cvalues[n - 1] = inv;
    headers = PySequence_Fast(headers_obj, "headers must be a sequence");
    if (!headers)
        goto fail;
    params = build_request(inv, inv_len, fname, fname_len, headers, &body, raw);
    if (!params)
        goto fail;

    /* Opaque handles, sized generously (16 and 24 bytes in wasmtime 50). */
    _Alignas(16) unsigned char instance[64], func[64], result[VAL_SIZE];
    memset(result, 0, sizeof result);
    void *store, *context, *err = NULL;
    int stage = STAGE_OK;
    double t_store = 0, t_inst = 0, t_call = 0;
    Py_BEGIN_ALLOW_THREADS
    store = W.store_new((void *)(uintptr_t)engine, NULL, NULL);
    context = W.store_context(store);
    void *cfg = W.wasi_config_new();
    /* Copies the strings; fails only on invalid UTF-8, which Python's encode never makes. */
    W.wasi_config_set_env(cfg, (size_t)n, cnames, cvalues);
    W.set_stdout(cfg, (void *)(uintptr_t)stdout_fn, (void *)(uintptr_t)key,
                 (void *)(uintptr_t)finalize);
    W.set_stderr(cfg, (void *)(uintptr_t)stderr_fn, (void *)(uintptr_t)key,
                 (void *)(uintptr_t)finalize);
    err = W.context_set_wasi(context, cfg); /* consumes cfg */
    if (err) {
        stage = STAGE_WASI;
    } else {
        W.store_limiter(store, memory_bytes, -1, -1, -1, -1);
        W.set_epoch_deadline(context, ticks);
        t_store = now();
        err = W.linker_instantiate((void *)(uintptr_t)linker, context,
                                   (void *)(uintptr_t)component, instance);
        t_inst = now();
        if (err) {
            stage = STAGE_INSTANTIATE;
        } else if (!W.instance_get_func(instance, context, (void *)(uintptr_t)handle, func)) {
            stage = STAGE_GET_FUNC;
        } else {
            err = W.func_call(func, context, params, 1, result, 1);
            t_call = now();
            if (err)
                stage = STAGE_CALL;
        }
    }
    if (stage != STAGE_OK)
        W.store_delete(store);
    Py_END_ALLOW_THREADS
    if (params != tl_buf)
        free(params);
    Py_DECREF(headers);
    PyBuffer_Release(&body);
    if (stage != STAGE_OK)
        return Py_BuildValue("iKdddOdK", stage, (unsigned long long)(uintptr_t)err, t_store,
                             t_inst, t_call, Py_None, 0.0, 0ULL);

    lifted = lift_result(result, max_body, raw);
    double t_post;
    Py_BEGIN_ALLOW_THREADS
    W.val_delete(result);
    err = W.func_post_return(func, context);
    t_post = now();
    if (!keep_store || !lifted)
        W.store_delete(store);
    Py_END_ALLOW_THREADS
    if (!lifted)
        return NULL; /* lift_result ran out of memory; a post-return error here is leaked */
    unsigned long long kept = keep_store ? (unsigned long long)(uintptr_t)store : 0ULL;
    if (err) {
        Py_DECREF(lifted);
        return Py_BuildValue("iKdddOdK", STAGE_POST_RETURN, (unsigned long long)(uintptr_t)err,
                             t_store, t_inst, t_call, Py_None, t_post, kept);
    }
    return Py_BuildValue("iKdddNdK", STAGE_OK, 0ULL, t_store, t_inst, t_call, lifted, t_post,
                         kept);
fail:
    Py_XDECREF(headers);
    PyBuffer_Release(&body);
    return NULL;
}

/* drop(store): delete a store `invoke(..., keep_store=True)` returned (GIL released). */
static PyObject *drop(PyObject *self, PyObject *args) {
    unsigned long long store;
    if (!PyArg_ParseTuple(args, "K", &store))
        return NULL;
    if (!bound || !store) {
        PyErr_SetString(PyExc_ValueError, "drop: no store (or bind() was not called)");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    W.store_delete((void *)(uintptr_t)store);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS, "Set the addresses of the wasmtime C functions used."},
    {"invoke", invoke, METH_VARARGS, "One invocation: new store, instantiate, call, drop."},
    {"drop", drop, METH_VARARGS, "Delete a store that invoke(keep_store=True) returned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcall", "wasmtime invocation sequence in one C call.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    PyModule_AddIntConstant(m, "STAGE_WASI", STAGE_WASI);
    PyModule_AddIntConstant(m, "STAGE_INSTANTIATE", STAGE_INSTANTIATE);
    PyModule_AddIntConstant(m, "STAGE_GET_FUNC", STAGE_GET_FUNC);
    PyModule_AddIntConstant(m, "STAGE_CALL", STAGE_CALL);
    PyModule_AddIntConstant(m, "STAGE_OK", STAGE_OK);
    PyModule_AddIntConstant(m, "STAGE_POST_RETURN", STAGE_POST_RETURN);
    PyModule_AddIntConstant(m, "VAL_SIZE", VAL_SIZE);
    PyModule_AddIntConstant(m, "ENTRY_SIZE", ENTRY_SIZE);
    PyModule_AddIntConstant(m, "ENTRY_VAL", ENTRY_VAL);
    PyModule_AddIntConstant(m, "VAL_PAYLOAD", VAL_PAYLOAD);
    PyModule_AddIntConstant(m, "K_U8", K_U8);
    PyModule_AddIntConstant(m, "K_U16", K_U16);
    PyModule_AddIntConstant(m, "K_STRING", K_STRING);
    PyModule_AddIntConstant(m, "K_LIST", K_LIST);
    PyModule_AddIntConstant(m, "K_RECORD", K_RECORD);
    PyModule_AddIntConstant(m, "K_TUPLE", K_TUPLE);
    PyModule_AddIntConstant(m, "K_RESULT", K_RESULT);
    return m;
}
