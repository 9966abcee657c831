/* dmamap._binding._cpu: the register accesses of AddressSpace (read8 ..
 * write64) as C methods of its base class, for the one case where cffi's call
 * cost is the whole cost: a Python driver poking one register at a time; and
 * its bulk accesses, whose fixed cost is a few percent of a 1 MiB copy.  A
 * cffi call costs about twice struct.unpack_from on a plain mmap before any
 * work is done; a method of a C type is called as cheaply as unpack_from is.
 *
 * Each method tries dmamap_access_try (a TLB hit on plain memory, done with
 * the GIL held because it never waits) and otherwise calls the Python method
 * _read(va, size) or _write(va, value, size), which makes the ordinary cffi
 * call (GIL released) and raises the library's errors.  This module is part of
 * the binding layer: the core's entry point comes from dmamap._core as an
 * address (bind_core), so there is one copy of the core in the process. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*access_try_fn)(void *as, uint64_t va, int size, int is_write, uint64_t *value);
typedef int (*access_bulk_fn)(void *as, uint64_t va, void *buf, uint64_t n, int is_write);
static access_try_fn access_try;
static access_bulk_fn access_bulk;
static uint64_t max_host_buffer;
static PyObject *str_read, *str_write, *str_read_slow, *str_readinto_slow, *str_write_slow, *str_bulk_raise;

typedef struct {
    PyObject_HEAD
    void *as;   /* the core's dmamap_as, owned by the subclass (NULL: unbound, every call takes the slow path) */
} CpuAccess;

/* The address argument as a u64, or -1 (no exception set) when the slow path must judge it. */
static int arg_u64(PyObject *o, uint64_t *out)
{
    if (!PyLong_Check(o) || PyBool_Check(o))   /* (an int subclass such as IoMem is an address too) */
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *cpu_read(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs, int size, const char *name)
{
    uint64_t va, v = 0;
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%zd given)", name, nargs);
        return NULL;
    }
    if (self->as && access_try && arg_u64(args[0], &va) == 0 && access_try(self->as, va, size, 0, &v))
        return PyLong_FromUnsignedLongLong(v);
    PyObject *width = PyLong_FromLong(size);
    if (!width)
        return NULL;
    PyObject *r = PyObject_CallMethodObjArgs((PyObject *)self, str_read, args[0], width, NULL);
    Py_DECREF(width);
    return r;
}

static PyObject *cpu_write(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs, int size, const char *name)
{
    uint64_t va, v;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly 2 arguments (%zd given)", name, nargs);
        return NULL;
    }
    if (self->as && access_try && arg_u64(args[0], &va) == 0 && arg_u64(args[1], &v) == 0 &&
        (size == 8 || v >> (8 * size) == 0) && access_try(self->as, va, size, 1, &v))
        Py_RETURN_NONE;
    PyObject *width = PyLong_FromLong(size);
    if (!width)
        return NULL;
    PyObject *r = PyObject_CallMethodObjArgs((PyObject *)self, str_write, args[0], args[1], width, NULL);
    Py_DECREF(width);
    return r;
}

#define ACCESSORS(bits, bytes)                                                                      \
    static PyObject *read##bits(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs)         \
    {                                                                                               \
        return cpu_read(self, args, nargs, bytes, "read" #bits);                                   \
    }                                                                                               \
    static PyObject *write##bits(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs)        \
    {                                                                                               \
        return cpu_write(self, args, nargs, bytes, "write" #bits);                                 \
    }
ACCESSORS(8, 1)
ACCESSORS(16, 2)
ACCESSORS(32, 4)
ACCESSORS(64, 8)

/* ---- Bulk accesses (read, readinto, write of AddressSpace) ----
 * One C call from Python to the core's dmamap_access_bulk_fast, the GIL
 * released around it as cffi releases it, with no cffi argument conversion
 * or from_buffer cdata: about 1.5 us less per call, a few percent of a 1 MiB
 * copy.  Anything unusual (an argument that is not a plain int, a buffer that
 * is not C-contiguous, a size the Python side bounds) goes to the Python
 * method _<name>_slow, which judges it and raises the library's errors; a
 * failed access is raised by _bulk_raise(rc) from the thread's error record. */

static PyObject *slow(CpuAccess *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *meth = PyObject_GetAttr((PyObject *)self, name);
    if (!meth)
        return NULL;
    PyObject *r = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
    Py_DECREF(meth);
    return r;
}

/* The access, the GIL released; -1 with the library's exception set on failure. */
static int bulk(CpuAccess *self, uint64_t va, void *buf, uint64_t n, int is_write)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = access_bulk(self->as, va, buf, n, is_write);
    Py_END_ALLOW_THREADS
    if (!rc)
        return 0;
    PyObject *code = PyLong_FromLong(rc);
    if (code) {
        Py_XDECREF(PyObject_CallMethodObjArgs((PyObject *)self, str_bulk_raise, code, NULL));
        Py_DECREF(code);
    }
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "dmamap: a failed bulk access raised nothing");
    return -1;
}

static PyObject *bulk_read(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t va, n;
    if (nargs == 2 && self->as && access_bulk && arg_u64(args[0], &va) == 0 && arg_u64(args[1], &n) == 0 &&
        n >= 2 && n <= max_host_buffer) {   /* (bytes of 0 and 1 may be shared singletons: never filled) */
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);   /* filled before anyone sees it */
        if (out) {
            if (!bulk(self, va, PyBytes_AS_STRING(out), n, 0))
                return out;
            Py_DECREF(out);
            return NULL;
        }
        PyErr_Clear();   /* out of host memory: the slow path says so in the library's terms */
    }
    return slow(self, str_read_slow, args, nargs);
}

/* The access through args[1]'s buffer (flags: what it must be): its length,
 * -1 with the exception set, or -2 when the arguments are for the Python
 * method to judge. */
static Py_ssize_t bulk_buffer(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs, int flags, int is_write)
{
    uint64_t va;
    Py_buffer view;
    if (nargs != 2 || !self->as || !access_bulk || arg_u64(args[0], &va) != 0)
        return -2;
    if (PyObject_GetBuffer(args[1], &view, flags) != 0) {
        PyErr_Clear();
        return -2;
    }
    Py_ssize_t n = view.len;
    int rc = n ? bulk(self, va, view.buf, (uint64_t)n, is_write) : 0;
    PyBuffer_Release(&view);
    return rc ? -1 : n;
}

static PyObject *bulk_readinto(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n = bulk_buffer(self, args, nargs, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS, 0);
    return n == -2 ? slow(self, str_readinto_slow, args, nargs) : n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *bulk_write(CpuAccess *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n = bulk_buffer(self, args, nargs, PyBUF_C_CONTIGUOUS, 1);
    if (n == -2)
        return slow(self, str_write_slow, args, nargs);
    if (n < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *bind(CpuAccess *self, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr(arg);
    if (!p && PyErr_Occurred())
        return NULL;
    self->as = p;
    Py_RETURN_NONE;
}

#define RDOC(bits) "read" #bits "($self, va, /)\n--\n\nLoad " #bits " bits at va through the MMU, as the CPU does " \
                   "(readl and friends on a kernel mapping)."
#define WDOC(bits) "write" #bits "($self, va, value, /)\n--\n\nStore the " #bits "-bit value at va through the MMU, " \
                   "as the CPU does (writel and friends on a kernel mapping)."

static PyMethodDef cpu_methods[] = {
    {"read8", (PyCFunction)(void (*)(void))read8, METH_FASTCALL, RDOC(8)},
    {"read16", (PyCFunction)(void (*)(void))read16, METH_FASTCALL, RDOC(16)},
    {"read32", (PyCFunction)(void (*)(void))read32, METH_FASTCALL, RDOC(32)},
    {"read64", (PyCFunction)(void (*)(void))read64, METH_FASTCALL, RDOC(64)},
    {"write8", (PyCFunction)(void (*)(void))write8, METH_FASTCALL, WDOC(8)},
    {"write16", (PyCFunction)(void (*)(void))write16, METH_FASTCALL, WDOC(16)},
    {"write32", (PyCFunction)(void (*)(void))write32, METH_FASTCALL, WDOC(32)},
    {"write64", (PyCFunction)(void (*)(void))write64, METH_FASTCALL, WDOC(64)},
    {"_bulk_read", (PyCFunction)(void (*)(void))bulk_read, METH_FASTCALL, "read(va, n) in one C call."},
    {"_bulk_readinto", (PyCFunction)(void (*)(void))bulk_readinto, METH_FASTCALL, "readinto(va, buf) in one C call."},
    {"_bulk_write", (PyCFunction)(void (*)(void))bulk_write, METH_FASTCALL, "write(va, data) in one C call."},
    {"_bind_cpu", (PyCFunction)bind, METH_O, "Bind to the core's address space at this address (an int)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CpuAccessType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dmamap._binding._cpu.CpuAccess",
    .tp_basicsize = sizeof(CpuAccess),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Register accesses through the MMU, in C (base class of AddressSpace).",
    .tp_methods = cpu_methods,
    .tp_new = PyType_GenericNew,
};

static PyObject *bind_core(PyObject *mod, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr(arg);
    if (!p && PyErr_Occurred())
        return NULL;
    access_try = (access_try_fn)p;
    Py_RETURN_NONE;
}

/* An unfilled bytes object for the caller to fill before anyone else sees it (as C
 * code filling PyBytes_FromStringAndSize(NULL, n) does): bytes(n) would zero-fill
 * what a bulk read then overwrites, a second pass over memory. */
static PyObject *fresh_bytes(PyObject *mod, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "negative size");
        return NULL;
    }
    return PyBytes_FromStringAndSize(NULL, n);
}

static PyObject *bind_bulk(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "bind_bulk(address, max_host_buffer)");
        return NULL;
    }
    void *p = PyLong_AsVoidPtr(args[0]);
    if (!p && PyErr_Occurred())
        return NULL;
    unsigned long long max = PyLong_AsUnsignedLongLong(args[1]);
    if (max == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    access_bulk = (access_bulk_fn)p;
    max_host_buffer = max;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"bind_core", bind_core, METH_O, "Take dmamap_access_try's address from dmamap._core."},
    {"bind_bulk", (PyCFunction)(void (*)(void))bind_bulk, METH_FASTCALL,
     "Take dmamap_access_bulk_fast's address from dmamap._core, and the largest read to allocate."},
    {"fresh_bytes", fresh_bytes, METH_O, "An unfilled bytes object of n bytes, for the caller to fill."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dmamap._binding._cpu", "Register accesses of AddressSpace, in C.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cpu(void)
{
    str_read = PyUnicode_InternFromString("_read");
    str_write = PyUnicode_InternFromString("_write");
    str_read_slow = PyUnicode_InternFromString("_bulk_read_slow");
    str_readinto_slow = PyUnicode_InternFromString("_bulk_readinto_slow");
    str_write_slow = PyUnicode_InternFromString("_bulk_write_slow");
    str_bulk_raise = PyUnicode_InternFromString("_bulk_raise");
    if (!str_read || !str_write || !str_read_slow || !str_readinto_slow || !str_write_slow || !str_bulk_raise ||
        PyType_Ready(&CpuAccessType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&CpuAccessType);
    if (PyModule_AddObject(m, "CpuAccess", (PyObject *)&CpuAccessType) < 0) {
        Py_DECREF(&CpuAccessType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
