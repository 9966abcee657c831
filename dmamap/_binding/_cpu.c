/* dmamap._binding._cpu: the register accesses of AddressSpace (read8 ..
 * write64) as C methods of its base class, for the one case where cffi's call
 * cost is the whole cost: a Python driver poking one register at a time.  A
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
static access_try_fn access_try;
static PyObject *str_read, *str_write;

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

static PyMethodDef module_methods[] = {
    {"bind_core", bind_core, METH_O, "Take dmamap_access_try's address from dmamap._core."},
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
    if (!str_read || !str_write || PyType_Ready(&CpuAccessType) < 0)
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
