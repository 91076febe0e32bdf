/* The small room's mix-minus in one pass (gateway/media/mixer.py, AudioMixer._mix_minus_native).
 *
 *   mix_minus(blocks, out, power, stride) -> None
 *       blocks: k int16 (960, 2) blocks (any strides), the publishing sources of this tick;
 *       out: int16 (>= k + 1, 960, 2) C-contiguous, writable: row i is the total minus block
 *       i, row k the total, each saturated to +-32767 (sums in int32: they never wrap);
 *       power: float64[k] writable or None: each block's mean square over every stride-th
 *       interleaved sample (the level meter's points).
 *
 * Numpy does this in four passes over int32 temporaries several times the blocks' size; after
 * the mixer's 20 ms sleep each of them runs in cold caches. Here the blocks are read in chunks
 * that stay in L1 between the total and the differences.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FRAMES 960
#define SAMPLES (2 * FRAMES)  /* interleaved stereo int16 of a 20 ms block */
#define CHUNK 240             /* samples per pass: k rows of it stay in L1 */
#define SAT 32767

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static void release(Buf *b) {
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

static int is_int16(const Py_buffer *v) {
    const char *f = v->format ? v->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    return strcmp(f, "h") == 0;
}

static inline int16_t saturate(int32_t v) {
    return (int16_t)(v > SAT ? SAT : (v < -SAT ? -SAT : v));
}

static PyObject *mix_minus(PyObject *self, PyObject *args) {
    PyObject *blocks_obj, *out_obj, *power_obj;
    Py_ssize_t stride;
    if (!PyArg_ParseTuple(args, "OOOn", &blocks_obj, &out_obj, &power_obj, &stride))
        return NULL;
    PyObject *blocks = PySequence_Fast(blocks_obj, "blocks: a sequence of (960, 2) int16 arrays");
    if (blocks == NULL)
        return NULL;
    const Py_ssize_t k = PySequence_Fast_GET_SIZE(blocks);
    Buf out = {0}, power = {0}, *views = NULL;
    const int16_t **rows = NULL;
    int16_t *copies = NULL;
    Py_ssize_t held = 0;
    PyObject *result = NULL;
    if (stride < 1) {
        PyErr_SetString(PyExc_ValueError, "mix_minus: stride >= 1");
        goto done;
    }
    if (PyObject_GetBuffer(out_obj, &out.view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0)
        goto done;
    out.held = 1;
    if (!is_int16(&out.view) || out.view.len < (k + 1) * SAMPLES * (Py_ssize_t)sizeof(int16_t)) {
        PyErr_SetString(PyExc_ValueError, "mix_minus: out int16 (>= k + 1, 960, 2)");
        goto done;
    }
    if (power_obj != Py_None) {
        if (PyObject_GetBuffer(power_obj, &power.view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0)
            goto done;
        power.held = 1;
        const char *f = power.view.format ? power.view.format : "B";
        if ((*f == '<' || *f == '=' || *f == '@' ? f[1] : f[0]) != 'd' || power.view.len != k * (Py_ssize_t)sizeof(double)) {
            PyErr_SetString(PyExc_ValueError, "mix_minus: power float64[k]");
            goto done;
        }
    }
    views = PyMem_Calloc(k ? k : 1, sizeof(Buf));
    rows = PyMem_Malloc(sizeof(*rows) * (k ? k : 1));
    if (views == NULL || rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < k; held++) {  /* every block checked before anything is written */
        Buf *b = &views[held];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(blocks, held), &b->view, PyBUF_RECORDS_RO) < 0)
            goto done;
        b->held = 1;
        if (!is_int16(&b->view) || b->view.ndim != 2 || b->view.shape[0] != FRAMES || b->view.shape[1] != 2) {
            PyErr_SetString(PyExc_ValueError, "mix_minus: a block is (960, 2) int16");
            held++;
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        const Py_buffer *v = &views[i].view;
        if (v->strides[0] == 4 && v->strides[1] == 2) {
            rows[i] = v->buf;
            continue;
        }
        if (copies == NULL && (copies = PyMem_Malloc(sizeof(int16_t) * SAMPLES * k)) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        int16_t *copy = copies + i * SAMPLES;  /* a strided block, made contiguous once */
        for (Py_ssize_t t = 0; t < FRAMES; t++)
            for (int c = 0; c < 2; c++)
                copy[2 * t + c] = *(const int16_t *)((const char *)v->buf + t * v->strides[0] + c * v->strides[1]);
        rows[i] = copy;
    }
    int16_t *dst = out.view.buf;
    int32_t total[CHUNK];
    for (Py_ssize_t start = 0; start < SAMPLES; start += CHUNK) {
        memset(total, 0, sizeof total);
        for (Py_ssize_t i = 0; i < k; i++) {
            const int16_t *row = rows[i] + start;
            for (int s = 0; s < CHUNK; s++)
                total[s] += row[s];
        }
        int16_t *all = dst + k * SAMPLES + start;
        for (int s = 0; s < CHUNK; s++)
            all[s] = saturate(total[s]);
        for (Py_ssize_t i = 0; i < k; i++) {
            const int16_t *row = rows[i] + start;
            int16_t *o = dst + i * SAMPLES + start;
            for (int s = 0; s < CHUNK; s++)
                o[s] = saturate(total[s] - row[s]);
        }
    }
    if (power.held) {
        double *p = power.view.buf;
        Py_ssize_t points = (SAMPLES + stride - 1) / stride;
        for (Py_ssize_t i = 0; i < k; i++) {
            double sum = 0.0;
            for (Py_ssize_t s = 0; s < SAMPLES; s += stride) {
                double v = rows[i][s];
                sum += v * v;
            }
            p[i] = sum / (double)points;
        }
    }
    result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < held; i++)
        release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(rows);
    PyMem_Free(copies);
    release(&out), release(&power);
    Py_DECREF(blocks);
    return result;
}

static PyMethodDef methods[] = {
    {"mix_minus", mix_minus, METH_VARARGS, "Every row's total minus itself, and the total, saturated."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mixkernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__mixkernel(void) {
    return PyModule_Create(&module);
}
