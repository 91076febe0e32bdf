/* The G.711 legs' resampling filters in C: 8 kHz mono <-> 48 kHz stereo for a whole tick of
 * legs in one call each way (plugins/sip/codecs.py, NativeG711Bank).
 *
 * Per tick a small room's legs cost a handful of numpy calls each way, and after the 20 ms
 * pause every call runs in cold caches: tens of microseconds whatever the size. Here each
 * direction is one call whose loops the compiler vectorises. The filters are the ones of the
 * numpy reference (codecs.upsample_8k_stereo / downsample_stereo_8k), passed in as arrays:
 *
 *   upsample(history, slots, samples, table, taps, out)
 *       samples (k, n): G.711 codes (uint8, with a float32[256] decode table) or int16 PCM
 *       (table None); taps float32 (8, 6): output phase p from input sample t - j; out int16
 *       (k, 6n, 2), both channels the same; history float32 (rows, >= 7) per slot, updated.
 *   decimate(history, slots, blocks, taps, out)      -> out int16 (k, 160)
 *   encode(history, slots, blocks, taps, alaw)       -> bytes (k * 160 G.711 codes)
 *       blocks: k int16 (960, 2) stereo blocks (any strides); taps float32[48] the 6:1 low-pass; history
 *       float32 (rows, >= 84): each slot's last 42 stereo input frames, updated; alaw: A-law
 *       (PCMA) if true, else mu-law (PCMU), computed (a 64 KB table is cache misses each
 *       tick), the sample floored and saturated like the table lookup of g711.ENCODE_BIASED.
 *   g711_encode(pcm, alaw)                           -> bytes: int16 samples encoded (the test
 *       that the computed encoders are g711.py's tables).
 *
 * Sums run in float32 like the reference's (in another order: results within one LSB), and
 * a sample is saturated to +-32767 then truncated, as the reference's clip + astype does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define PHASES 6
#define UP_TAPS 8                 /* taps per phase of the 1:6 interpolator */
#define UP_HISTORY (UP_TAPS - 1)  /* input samples an interpolator keeps */
#define DOWN_TAPS 48              /* the 6:1 decimator's low-pass */
#define DOWN_HISTORY (DOWN_TAPS - PHASES)  /* mono input samples a decimator keeps (42) */
#define BLOCK_IN 960              /* 48 kHz frames of a 20 ms block */
#define BLOCK_OUT 160             /* 8 kHz samples of a 20 ms block */
#define MAX_UP_IN 1920            /* 8 kHz input samples per leg per call (240 ms) */

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

/* The buffer's items are `format` ("f", "h", "B"), native byte order. */
static int has_format(const Py_buffer *view, const char *format) {
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    return strcmp(f, format) == 0;
}

/* A C-contiguous buffer of `format` with `ndim` dimensions (0: any). */
static int get(PyObject *obj, Buf *b, const char *format, int ndim, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0)
        return -1;
    b->held = 1;
    if (!has_format(&b->view, format) || (ndim && b->view.ndim != ndim)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-D array of format '%s', got %d-D '%s'", what, ndim,
                     format, b->view.ndim, b->view.format ? b->view.format : "B");
        release(b);
        return -1;
    }
    return 0;
}

/* ITU-T G.711, as plugins/sip/g711.py builds its tables */
/* 4 floats as one SSE (or NEON) register through the compiler's vector extension */
typedef float v4 __attribute__((vector_size(16)));
#define V 4
_Static_assert(BLOCK_OUT % V == 0, "the decimator writes whole vectors");

static inline v4 load(const float *at) { /* unaligned */
    v4 v;
    memcpy(&v, at, sizeof v);
    return v;
}

static inline v4 splat(float c) {
    return (v4){c, c, c, c};
}

static inline int top_bit(unsigned v) { /* index of the highest set bit; v > 0 */
    return 31 - __builtin_clz(v);
}

static inline uint8_t ulaw(int pcm) {
    int sign = pcm < 0 ? 0x80 : 0;
    int magnitude = (pcm < 0 ? -pcm : pcm);
    magnitude = (magnitude > 32635 ? 32635 : magnitude) + 0x84;  /* 0x84..0x7FFF */
    int exponent = top_bit((unsigned)magnitude) - 7;  /* the segment: <= 0xFF is 0, <= 0x1FF is 1 */
    int mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    return (uint8_t)(~(sign | (exponent << 4) | mantissa) & 0xFF);
}

static inline uint8_t alaw(int pcm) {
    int mask;
    pcm >>= 3;  /* arithmetic, like Python's >> */
    if (pcm >= 0) {
        mask = 0xD5;
    } else {
        mask = 0x55;
        pcm = -pcm - 1;
    }
    /* 0..4095: the segment is 0 up to 0x1F, then one per bit */
    int seg = pcm > 0x1F ? top_bit((unsigned)pcm) - 4 : 0;
    int value = (seg << 4) | (seg < 2 ? (pcm >> 1) & 0x0F : (pcm >> seg) & 0x0F);
    return (uint8_t)(value ^ mask);
}

static inline float saturate(float v) {
    return v > 32767.0f ? 32767.0f : (v < -32767.0f ? -32767.0f : v);
}

/* The slots as indices into `rows` history rows; a new reference to the fast sequence. */
static PyObject *slot_list(PyObject *slots, Py_ssize_t rows, Py_ssize_t **out) {
    PyObject *seq = PySequence_Fast(slots, "slots: a sequence of ints");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t *index = PyMem_Malloc(sizeof(Py_ssize_t) * (k ? k : 1));
    if (index == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_ssize_t s = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i), PyExc_OverflowError);
        if (s == -1 && PyErr_Occurred()) {
            PyMem_Free(index);
            Py_DECREF(seq);
            return NULL;
        }
        if (s < 0 || s >= rows) {
            PyErr_Format(PyExc_IndexError, "slot %zd outside the bank's %zd rows", s, rows);
            PyMem_Free(index);
            Py_DECREF(seq);
            return NULL;
        }
        index[i] = s;
    }
    *out = index;
    return seq;
}

static PyObject *upsample(PyObject *self, PyObject *args) {
    PyObject *history_obj, *slots_obj, *samples_obj, *table_obj, *taps_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO", &history_obj, &slots_obj, &samples_obj, &table_obj, &taps_obj, &out_obj))
        return NULL;
    Buf history = {0}, samples = {0}, table = {0}, taps = {0}, out = {0};
    PyObject *seq = NULL, *result = NULL;
    Py_ssize_t *index = NULL;
    int coded = table_obj != Py_None;
    if (get(history_obj, &history, "f", 2, 1, "history") < 0 ||
        get(samples_obj, &samples, coded ? "B" : "h", 2, 0, "samples") < 0 ||
        (coded && get(table_obj, &table, "f", 0, 0, "table") < 0) ||
        get(taps_obj, &taps, "f", 0, 0, "taps") < 0 || get(out_obj, &out, "h", 0, 1, "out") < 0)
        goto done;
    if (history.view.shape[1] < UP_HISTORY || (coded && table.view.len != 256 * (Py_ssize_t)sizeof(float)) ||
        taps.view.len != UP_TAPS * PHASES * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "upsample: history (rows, >= 7), table float32[256], taps float32 (8, 6)");
        goto done;
    }
    if ((seq = slot_list(slots_obj, history.view.shape[0], &index)) == NULL)
        goto done;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq), n = samples.view.shape[1];
    if (samples.view.shape[0] != k || n < 1 || n > MAX_UP_IN ||
        out.view.len != k * n * PHASES * 2 * (Py_ssize_t)sizeof(int16_t)) {
        PyErr_SetString(PyExc_ValueError, "upsample: samples (k, n <= 1920) for k slots, out int16 (k, 6n, 2)");
        goto done;
    }
    const Py_ssize_t width = history.view.shape[1];
    float *hist = history.view.buf;
    const float *h = taps.view.buf, *decode = coded ? table.view.buf : NULL;
    int16_t *dst = out.view.buf;
    float x[UP_HISTORY + MAX_UP_IN], y[PHASES][MAX_UP_IN];
    for (Py_ssize_t i = 0; i < k; i++) {
        float *memory = hist + index[i] * width;
        memcpy(x, memory, UP_HISTORY * sizeof(float));
        if (coded) {
            const uint8_t *codes = (const uint8_t *)samples.view.buf + i * n;
            for (Py_ssize_t t = 0; t < n; t++)
                x[UP_HISTORY + t] = decode[codes[t]];
        } else {
            const int16_t *pcm = (const int16_t *)samples.view.buf + i * n;
            for (Py_ssize_t t = 0; t < n; t++)
                x[UP_HISTORY + t] = (float)pcm[t];
        }
        /* 4 outputs of a phase at a time, accumulated in a register over the 8 taps */
        Py_ssize_t t = 0;
        for (; t + V <= n; t += V)
            for (int p = 0; p < PHASES; p++) {
                v4 acc = splat(h[p]) * load(x + t + UP_HISTORY);
                for (int j = 1; j < UP_TAPS; j++)
                    acc += splat(h[j * PHASES + p]) * load(x + t + UP_HISTORY - j);
                memcpy(&y[p][t], &acc, sizeof acc);
            }
        for (; t < n; t++)  /* a tail shorter than a vector */
            for (int p = 0; p < PHASES; p++) {
                float acc = 0.0f;
                for (int j = 0; j < UP_TAPS; j++)
                    acc += h[j * PHASES + p] * x[t + UP_HISTORY - j];
                y[p][t] = acc;
            }
        int16_t *o = dst + i * n * PHASES * 2;
        for (Py_ssize_t t = 0; t < n; t++)
            for (int p = 0; p < PHASES; p++) {
                int16_t v = (int16_t)saturate(y[p][t]);
                o[2 * (PHASES * t + p)] = v;
                o[2 * (PHASES * t + p) + 1] = v;
            }
        memcpy(memory, x + n, UP_HISTORY * sizeof(float));
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(index);
    Py_XDECREF(seq);
    release(&history), release(&samples), release(&table), release(&taps), release(&out);
    return result;
}

/* A leg's block: 960 stereo int16 frames, as (960, 2) with any strides or 1920 contiguous;
 * where frame t's channel c is: base + t * frame + c * channel (bytes). */
static int get_block(PyObject *obj, Buf *b, Py_ssize_t *frame, Py_ssize_t *channel) {
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_RECORDS_RO) < 0)
        return -1;
    b->held = 1;
    int ok = has_format(&b->view, "h");
    if (ok && b->view.ndim == 2 && b->view.shape[0] == BLOCK_IN && b->view.shape[1] == 2) {
        *frame = b->view.strides[0], *channel = b->view.strides[1];
    } else if (ok && b->view.ndim == 1 && b->view.shape[0] == 2 * BLOCK_IN && b->view.strides[0] == 2) {
        *frame = 4, *channel = 2;
    } else {
        PyErr_SetString(PyExc_ValueError, "decimate: a block is 960 stereo int16 frames, (960, 2)");
        release(b);
        return -1;
    }
    return 0;
}

/* Each leg's block downmixed and decimated to y[leg][160] (float, no saturation yet). Every
 * argument is checked before any filter memory changes. */
static int decimate_into(PyObject *history_obj, PyObject *slots_obj, PyObject *blocks_obj, PyObject *taps_obj,
                         float **y_out, Py_ssize_t *k_out) {
    Buf history = {0}, taps = {0}, *views = NULL;
    PyObject *seq = NULL, *blocks = NULL;
    Py_ssize_t *index = NULL, *steps = NULL, k = 0, held = 0;
    float *y = NULL;
    int ok = -1;
    if (get(history_obj, &history, "f", 2, 1, "history") < 0 || get(taps_obj, &taps, "f", 0, 0, "taps") < 0)
        goto done;
    if (history.view.shape[1] < 2 * DOWN_HISTORY || taps.view.len != DOWN_TAPS * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "decimate: history (rows, >= 84), taps float32[48]");
        goto done;
    }
    if ((seq = slot_list(slots_obj, history.view.shape[0], &index)) == NULL)
        goto done;
    if ((blocks = PySequence_Fast(blocks_obj, "blocks: a sequence of (960, 2) int16 arrays")) == NULL)
        goto done;
    k = PySequence_Fast_GET_SIZE(seq);
    if (PySequence_Fast_GET_SIZE(blocks) != k) {
        PyErr_SetString(PyExc_ValueError, "decimate: one block per slot");
        goto done;
    }
    y = PyMem_Malloc(sizeof(float) * BLOCK_OUT * (k ? k : 1));
    views = PyMem_Calloc(k ? k : 1, sizeof(Buf));
    steps = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (k ? k : 1));
    if (y == NULL || views == NULL || steps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < k; held++)
        if (get_block(PySequence_Fast_GET_ITEM(blocks, held), &views[held], &steps[2 * held],
                      &steps[2 * held + 1]) < 0)
            goto done;
    const Py_ssize_t width = history.view.shape[1];
    float *hist = history.view.buf;
    const float *h = taps.view.buf;
    /* the mono input in its 6 phases: phase p, row r is sample 6r + p of history + block */
    enum { ROWS = (DOWN_HISTORY + BLOCK_IN) / PHASES };
    float phase[PHASES][ROWS];
    for (Py_ssize_t i = 0; i < k; i++) {
        const char *base = views[i].view.buf;
        const Py_ssize_t frame = steps[2 * i], channel = steps[2 * i + 1];
        float *memory = hist + index[i] * width;
        /* history rows first (42 samples: 7 whole rows), then the block's 160 rows */
        for (int r = 0; r < DOWN_HISTORY / PHASES; r++)
            for (int p = 0; p < PHASES; p++) {
                const float *pair = memory + 2 * (PHASES * r + p);
                phase[p][r] = 0.5f * (pair[0] + pair[1]);
            }
        for (int r = 0; r < BLOCK_OUT; r++)
            for (int p = 0; p < PHASES; p++) {
                const char *at = base + (PHASES * r + p) * frame;
                phase[p][DOWN_HISTORY / PHASES + r] =
                    0.5f * ((float)*(const int16_t *)at + (float)*(const int16_t *)(at + channel));
            }
        for (int t = 0; t < DOWN_HISTORY; t++) {  /* the last 42 stereo frames, for the next tick */
            const char *at = base + (BLOCK_IN - DOWN_HISTORY + t) * frame;
            memory[2 * t] = (float)*(const int16_t *)at;
            memory[2 * t + 1] = (float)*(const int16_t *)(at + channel);
        }
        float *yi = y + i * BLOCK_OUT;
        for (int n = 0; n < BLOCK_OUT; n += V) {  /* 4 outputs, accumulated in a register */
            v4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int q = 0; q < DOWN_TAPS / PHASES; q++)
                for (int p = 0; p < PHASES; p++)
                    acc += splat(h[q * PHASES + p]) * load(phase[p] + n + q);
            memcpy(yi + n, &acc, sizeof acc);
        }
    }
    *y_out = y, *k_out = k;
    y = NULL;
    ok = 0;
done:
    for (Py_ssize_t i = 0; i < held; i++)
        release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(steps);
    PyMem_Free(y);
    PyMem_Free(index);
    Py_XDECREF(seq);
    Py_XDECREF(blocks);
    release(&history), release(&taps);
    return ok;
}

static PyObject *decimate(PyObject *self, PyObject *args) {
    PyObject *history, *slots, *blocks, *taps, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &history, &slots, &blocks, &taps, &out_obj))
        return NULL;
    Buf out = {0};
    if (get(out_obj, &out, "h", 0, 1, "out") < 0)
        return NULL;
    float *y = NULL;
    Py_ssize_t k = 0;
    PyObject *result = NULL;
    if (decimate_into(history, slots, blocks, taps, &y, &k) == 0) {
        if (out.view.len != k * BLOCK_OUT * (Py_ssize_t)sizeof(int16_t)) {
            PyErr_SetString(PyExc_ValueError, "decimate: out int16 (k, 160)");
        } else {
            int16_t *o = out.view.buf;
            for (Py_ssize_t i = 0; i < k * BLOCK_OUT; i++)
                o[i] = (int16_t)saturate(y[i]);
            result = Py_NewRef(Py_None);
        }
    }
    PyMem_Free(y);
    release(&out);
    return result;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *history, *slots, *blocks, *taps;
    int use_alaw;
    if (!PyArg_ParseTuple(args, "OOOOp", &history, &slots, &blocks, &taps, &use_alaw))
        return NULL;
    PyObject *result = NULL;
    float *y = NULL;
    Py_ssize_t k = 0;
    if (decimate_into(history, slots, blocks, taps, &y, &k) == 0 &&
        (result = PyBytes_FromStringAndSize(NULL, k * BLOCK_OUT)) != NULL) {
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(result);
        for (Py_ssize_t i = 0; i < k * BLOCK_OUT; i++) {
            float v = floorf(y[i]);  /* the biased table's index, truncated, is the floor */
            int pcm = v >= 32767.0f ? 32767 : (v <= -32768.0f ? -32768 : (int)v);
            o[i] = use_alaw ? alaw(pcm) : ulaw(pcm);
        }
    }
    PyMem_Free(y);
    return result;
}

static PyObject *g711_encode(PyObject *self, PyObject *args) {
    PyObject *pcm_obj;
    int use_alaw;
    if (!PyArg_ParseTuple(args, "Op", &pcm_obj, &use_alaw))
        return NULL;
    Buf pcm = {0};
    if (get(pcm_obj, &pcm, "h", 0, 0, "pcm") < 0)
        return NULL;
    Py_ssize_t n = pcm.view.len / (Py_ssize_t)sizeof(int16_t);
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result != NULL) {
        const int16_t *s = pcm.view.buf;
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(result);
        for (Py_ssize_t i = 0; i < n; i++)
            o[i] = use_alaw ? alaw(s[i]) : ulaw(s[i]);
    }
    release(&pcm);
    return result;
}

static PyMethodDef methods[] = {
    {"upsample", upsample, METH_VARARGS, "8 kHz (G.711 codes or int16) to 48 kHz stereo int16, per slot."},
    {"decimate", decimate, METH_VARARGS, "48 kHz stereo blocks to 8 kHz mono int16, per slot."},
    {"encode", encode, METH_VARARGS, "48 kHz stereo blocks to 8 kHz G.711 codes (bytes), per slot."},
    {"g711_encode", g711_encode, METH_VARARGS, "int16 samples to G.711 codes (bytes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_filterbank", NULL, -1, methods};

PyMODINIT_FUNC PyInit__filterbank(void) {
    return PyModule_Create(&module);
}
