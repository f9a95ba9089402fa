/* cache_core._plain: the exact-type walk behind the codec's fast path (see cache_core/_codec.py).
 *
 * plain_json(obj) / plain_msgpack(obj) return True when obj is an exact dict or list holding only
 * exact dicts (str keys, none of them the tag key "__cc"), lists, str, int, bool, None, finite
 * floats (and bytes, for msgpack): data that msgspec writes and reads back equal and of the same
 * types. Anything else, or nesting deeper than MAX_DEPTH (which also stops on a cycle), is False
 * and the caller takes the careful Python path, which tags or refuses it. The walk runs no Python
 * code (no __eq__, no __hash__), so the borrowed references stay valid while it holds the GIL.
 *
 * has_mark(data, mark): whether bytes `mark` occurs in bytes `data` (glibc memmem, several times
 * faster than `bytes.__contains__` on JSON, where the mark's quote character is everywhere).
 *
 * loads(decode, mark, revive, fallback, data): the serializer's loads without a Python frame:
 * decode(data), then revive(value) if the mark occurs in data. Anything unusual (data not exact
 * bytes, or an Exception from decode or revive) is handed to fallback(data), the Python loads,
 * which redoes the work and raises the library's own SerializationError.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define MAX_DEPTH 200

static int plain_value(PyObject *v, int bytes_ok, int depth);

static int is_tag_key(PyObject *k)
{
    return PyUnicode_GET_LENGTH(k) == 4 && PyUnicode_CompareWithASCIIString(k, "__cc") == 0;
}

static int plain_container(PyObject *obj, int bytes_ok, int depth)
{
    if (depth > MAX_DEPTH)
        return 0;
    if (PyDict_CheckExact(obj)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(obj, &pos, &k, &v)) {
            if (!PyUnicode_CheckExact(k) || is_tag_key(k))
                return 0;
            if (!plain_value(v, bytes_ok, depth))
                return 0;
        }
        return 1;
    }
    if (PyList_CheckExact(obj)) {
        Py_ssize_t n = PyList_GET_SIZE(obj);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!plain_value(PyList_GET_ITEM(obj, i), bytes_ok, depth))
                return 0;
        }
        return 1;
    }
    return 0;
}

static int plain_value(PyObject *v, int bytes_ok, int depth)
{
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyBool_Type || v == Py_None)
        return 1;
    if (t == &PyFloat_Type)
        return isfinite(PyFloat_AS_DOUBLE(v));
    if (t == &PyBytes_Type)
        return bytes_ok;
    if (t == &PyDict_Type || t == &PyList_Type)
        return plain_container(v, bytes_ok, depth + 1);
    return 0;
}

static PyObject *plain_json(PyObject *self, PyObject *obj)
{
    (void)self;
    return PyBool_FromLong(plain_container(obj, 0, 0));
}

static PyObject *plain_msgpack(PyObject *self, PyObject *obj)
{
    (void)self;
    return PyBool_FromLong(plain_container(obj, 1, 0));
}

static PyObject *has_mark(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "has_mark(data: bytes, mark: bytes)");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), m = PyBytes_GET_SIZE(args[1]);
    if (m == 0)
        Py_RETURN_TRUE;
    return PyBool_FromLong(
        memmem(PyBytes_AS_STRING(args[0]), (size_t)n, PyBytes_AS_STRING(args[1]), (size_t)m)
        != NULL);
}

static PyObject *fallback(PyObject *fn, PyObject *data)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return NULL; /* KeyboardInterrupt, SystemExit...: never swallowed */
    PyErr_Clear();
    return PyObject_CallOneArg(fn, data);
}

static PyObject *fast_loads(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "loads(decode, mark, revive, fallback, data)");
        return NULL;
    }
    PyObject *data = args[4], *mark = args[1];
    if (!PyBytes_CheckExact(data) || !PyBytes_CheckExact(mark))
        return PyObject_CallOneArg(args[3], data);
    PyObject *value = PyObject_CallOneArg(args[0], data);
    if (value == NULL)
        return fallback(args[3], data);
    Py_ssize_t m = PyBytes_GET_SIZE(mark);
    if (m == 0
        || memmem(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data),
                  PyBytes_AS_STRING(mark), (size_t)m)
               == NULL)
        return value;
    PyObject *revived = PyObject_CallOneArg(args[2], value);
    Py_DECREF(value);
    if (revived == NULL)
        return fallback(args[3], data);
    return revived;
}

static PyMethodDef methods[] = {
    {"loads", (PyCFunction)(void (*)(void))fast_loads, METH_FASTCALL,
     "decode(data), revived when mark occurs in data; fallback(data) on anything unusual."},
    {"has_mark", (PyCFunction)(void (*)(void))has_mark, METH_FASTCALL,
     "True if bytes mark occurs in bytes data."},
    {"plain_json", plain_json, METH_O, "True if obj is plain data JSON carries exactly."},
    {"plain_msgpack", plain_msgpack, METH_O, "True if obj is plain data msgpack carries exactly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cache_core._plain", "The codec's exact-type walk.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__plain(void)
{
    return PyModule_Create(&module);
}
