/* A publisher's VP8 received without Python per packet (plugins/webrtc/native_rx.py drives it).
 *
 * Reader: a native thread owning a dup of one ICE socket. It reads datagrams in batches
 * (recvmmsg), SRTP/SRTCP-unprotects them with the connection's own libsrtp session (the
 * function pointers and the srtp_t come from pylibsrtp, so no second libsrtp is linked),
 * parses the RTP header and hands each packet of a bound SSRC to its Vp8Stream. Everything
 * else (STUN, DTLS, RTCP, RTP of other receivers) goes to Python as it is, one call per batch.
 *
 * Vp8Stream: plugins/webrtc/vp8_receiver.py's steps on one VP8 receiver, in C: receiver
 * report statistics per SSRC, RTX unwrapped (RFC 4588), NACK on sequence gaps (aiortc's
 * NackGenerator), REMB samples one per frame (abs-send-time, RFC 8285 extensions), the VP8
 * payload descriptor (RFC 7741) and the frame assembler of plugins/webrtc/vp8_frames.py,
 * ported line for line. Python is called only when there is something to act on: complete
 * frames, a REMB sample, a NACK, a PLI, fresh statistics.
 *
 * Locking: all stream and SRTP state is under one mutex. The mutex is never held while
 * waiting for the GIL (the native thread takes it without the GIL; Python callers hold the
 * GIL and take it), so the two cannot deadlock. Every length is checked against the
 * datagram: hostile packets are dropped, never read past.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CAPACITY 512
#define MASK (CAPACITY - 1)
#define MAX_HELD_FRAMES 15
#define PLI_EVERY 30
#define HISTORY 128 /* aiortc's RTP_HISTORY_SIZE */
#define MAX_MISSING 512
#define MAX_SSRCS 8
#define MAX_BINDS 16
#define BATCH 32
#define BUF_SIZE 8192
/* what Python needs less than per frame goes to it at most this often (the estimator works on
 * each sample's own arrival time, so batching its samples changes no result, only when the
 * REMB goes out: at most REMB_EVERY_MS later) */
#define STATS_EVERY_MS 200
#define REMB_EVERY_MS 100
#define MAX_REMBS 32

typedef int (*srtp_fn)(void *ctx, void *hdr, int *len);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ms(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ RTP parsing */
typedef struct {
    int marker, pt;
    uint16_t seq;
    uint32_t ts, ssrc;
    size_t start, end, padding;
    unsigned profile;
    size_t ext_start, ext_end;
} Header;

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* plugins/webrtc/rtp_parse.py parse_header: 0 on success, -1 if malformed */
static int parse_header(const uint8_t *d, size_t size, Header *h) {
    if (size < 12 || d[0] >> 6 != 2) return -1;
    size_t pos = 12 + 4 * (size_t)(d[0] & 0x0F);
    if (pos > size) return -1;
    h->profile = 0;
    h->ext_start = h->ext_end = 0;
    if (d[0] & 0x10) {
        if (pos + 4 > size) return -1;
        h->profile = be16(d + pos);
        size_t words = be16(d + pos + 2);
        h->ext_start = pos + 4;
        h->ext_end = pos = h->ext_start + 4 * words;
        if (pos > size) return -1;
    }
    size_t end = size, padding = 0;
    if (d[0] & 0x20) {
        padding = d[size - 1];
        if (!padding || padding > size - pos) return -1;
        end -= padding;
    }
    h->marker = d[1] >> 7;
    h->pt = d[1] & 0x7F;
    h->seq = be16(d + 2);
    h->ts = be32(d + 4);
    h->ssrc = be32(d + 8);
    h->start = pos;
    h->end = end;
    h->padding = padding;
    return 0;
}

/* rtp_parse.abs_send_time: the 24-bit value, or -1 */
static int64_t abs_send_time(const uint8_t *d, const Header *h, int ext_id) {
    if (!ext_id || !h->profile) return -1;
    size_t pos = h->ext_start, end = h->ext_end;
    if (h->profile == 0xBEDE) {
        while (pos < end) {
            uint8_t byte = d[pos];
            if (byte == 0) { pos++; continue; }
            int id = byte >> 4;
            size_t length = (byte & 0x0F) + 1;
            if (id == 15) return -1;
            pos++;
            if (pos + length > end) return -1;
            if (id == ext_id) return length == 3 ? (int64_t)(d[pos] << 16 | d[pos + 1] << 8 | d[pos + 2]) : -1;
            pos += length;
        }
    } else if ((h->profile & 0xFFF0) == 0x1000) {
        while (pos < end) {
            int id = d[pos];
            if (id == 0) { pos++; continue; }
            if (pos + 2 > end) return -1;
            size_t length = d[pos + 1];
            pos += 2;
            if (pos + length > end) return -1;
            if (id == ext_id) return length == 3 ? (int64_t)(d[pos] << 16 | d[pos + 1] << 8 | d[pos + 2]) : -1;
            pos += length;
        }
    }
    return -1;
}

/* rtp_parse.vp8_descriptor: offset of the VP8 data, or -1; *frame_start set */
static long vp8_descriptor(const uint8_t *d, size_t start, size_t end, int *frame_start) {
    if (start >= end) return -1;
    uint8_t byte = d[start];
    *frame_start = (byte & 0x17) == 0x10;
    size_t pos = start + 1;
    if (byte & 0x80) {
        if (pos >= end) return -1;
        uint8_t ext = d[pos++];
        if (ext & 0x80) {
            if (pos >= end) return -1;
            pos += (d[pos] & 0x80) ? 2 : 1;
        }
        if (ext & 0x40) pos++;
        if (ext & 0x30) pos++;
        if (pos > end) return -1;
    }
    return (long)pos;
}

/* ------------------------------------------------------------------ the stream */
typedef struct {
    int used;
    uint16_t seq;
    uint32_t ts;
    int start, marker;
    uint8_t *data;
    size_t len, cap;
} Slot;

typedef struct {
    int used;
    uint32_t ssrc;
    int64_t received;
    int has_base, has_max;
    uint16_t base_seq, max_seq;
    int64_t cycles, jitter_q4;
    int has_last;
    int64_t last_arrival, last_timestamp;
    int dirty, marker;
} Stats;

typedef struct {
    uint32_t ts;
    uint8_t *data;
    size_t len;
    int key;
} OutFrame;

typedef struct {
    int64_t sent, arrival, size;
    uint32_t ssrc;
} OutRemb;

typedef struct {
    PyObject_HEAD
    PyObject *callback;
    pthread_mutex_t deliver_mu; /* one delivery at a time, in order (recursive; waited for without the GIL) */
    uint8_t vp8[128], rtx[128];
    int abs_id, remb;
    struct { uint32_t rtx, original; } rtx_ssrc[MAX_SSRCS];
    int n_rtx_ssrc;
    /* assembler (vp8_frames.Vp8Frames) */
    Slot slots[CAPACITY];
    int has_next, has_highest, has_held_first;
    uint16_t next_seq, highest, held_first;
    long held, waiting;
    int picture_lost;
    long long frames_out, dropped_frames, packets;
    /* NACK (vp8_receiver.Nacks) */
    int nack_has_max;
    uint16_t nack_max;
    uint16_t missing[MAX_MISSING];
    int n_missing;
    /* receiver report statistics, per SSRC (RTX included) */
    Stats stats[MAX_SSRCS];
    int64_t frame_bytes, stats_sent_ms, remb_sent_ms;
    /* pending for Python */
    OutFrame *frames;
    int n_frames, cap_frames;
    OutRemb rembs[MAX_REMBS];
    int n_rembs;
    int nack_due, pli_due;
    uint32_t nack_ssrc, pli_ssrc;
    uint32_t media_ssrc; /* of the last VP8 packet (an RTX packet's original) */
    int has_media_ssrc;
} Stream;

static void frames_lose(Stream *s) {
    s->has_next = 0;
    s->held = 0;
    s->waiting = 0;
    s->picture_lost = 1;
}

static int is_keyframe(const Slot *slot) { return slot->len && !(slot->data[0] & 0x01); }

static inline Slot *slot_of(Stream *s, uint16_t seq) {
    Slot *slot = &s->slots[seq & MASK];
    return slot->used && slot->seq == seq ? slot : NULL;
}

/* Vp8Frames._frame_at: 1 and *last if the frame starting at first is complete */
static int frame_at(Stream *s, uint16_t first, uint16_t *last) {
    Slot *slot = slot_of(s, first);
    if (!slot || !slot->start) return 0;
    uint32_t ts = slot->ts;
    uint16_t seq = first;
    int i;
    for (i = 0; i < CAPACITY; i++) {
        if (slot->marker) break;
        seq = (uint16_t)(seq + 1);
        slot = slot_of(s, seq);
        if (!slot) return 0;
        if (slot->ts != ts) {
            if (!slot->start) return 0;
            seq = (uint16_t)(seq - 1);
            break;
        }
    }
    if (i == CAPACITY) return 0;
    *last = seq;
    return 1;
}

static int start_of(Stream *s, uint16_t seq, uint16_t *first) {
    Slot *slot = slot_of(s, seq);
    if (!slot) return 0;
    uint32_t ts = slot->ts;
    for (int i = 0; i < CAPACITY; i++) {
        if (slot->start) { *first = seq; return 1; }
        seq = (uint16_t)(seq - 1);
        slot = slot_of(s, seq);
        if (!slot || slot->ts != ts) return 0;
    }
    return 0;
}

static void take(Stream *s, uint16_t first, uint16_t last) {
    uint16_t seq = first;
    for (;;) {
        s->slots[seq & MASK].used = 0;
        if (seq == last) return;
        seq = (uint16_t)(seq + 1);
    }
}

static int emit(Stream *s, uint16_t first, uint16_t last) {
    size_t total = 0;
    uint16_t seq = first;
    for (;;) {
        total += s->slots[seq & MASK].len;
        if (seq == last) break;
        seq = (uint16_t)(seq + 1);
    }
    if (s->n_frames == s->cap_frames) {
        int cap = s->cap_frames ? 2 * s->cap_frames : 8;
        OutFrame *grown = realloc(s->frames, cap * sizeof(OutFrame));
        if (!grown) return -1;
        s->frames = grown;
        s->cap_frames = cap;
    }
    uint8_t *data = malloc(total ? total : 1);
    if (!data) return -1;
    size_t pos = 0;
    seq = first;
    for (;;) {
        Slot *slot = &s->slots[seq & MASK];
        if (slot->len) memcpy(data + pos, slot->data, slot->len);
        pos += slot->len;
        if (seq == last) break;
        seq = (uint16_t)(seq + 1);
    }
    Slot *head = &s->slots[first & MASK];
    OutFrame *f = &s->frames[s->n_frames++];
    f->ts = head->ts;
    f->data = data;
    f->len = total;
    f->key = is_keyframe(head);
    return 0;
}

static void drain(Stream *s) {
    while (s->has_next) {
        uint16_t last;
        if (!frame_at(s, s->next_seq, &last)) return;
        if (emit(s, s->next_seq, last) < 0) { frames_lose(s); return; }
        take(s, s->next_seq, last);
        s->next_seq = (uint16_t)(last + 1);
        s->held = 0;
        s->frames_out++;
    }
}

static void jump(Stream *s, uint16_t first) {
    if (s->has_next && first != s->next_seq) s->dropped_frames++;
    for (int i = 0; i < CAPACITY; i++) {
        Slot *slot = &s->slots[i];
        if (slot->used && ((uint16_t)(slot->seq - first)) >= 0x8000) slot->used = 0;
    }
    s->has_next = 1;
    s->next_seq = first;
    s->held = 0;
    s->waiting = 0;
}

static void beyond(Stream *s, uint16_t seq) {
    if (s->has_next && ((uint16_t)(seq - s->next_seq)) >= 0x8000) return;
    uint16_t first, last;
    if (!start_of(s, seq, &first)) return;
    if (s->has_next && first == s->next_seq) return;
    if (!frame_at(s, first, &last)) return;
    if (is_keyframe(&s->slots[first & MASK])) {
        jump(s, first);
        drain(s);
    } else if (!s->has_next) {
        s->waiting++;
        s->dropped_frames++;
        take(s, first, last);
        if (s->waiting % PLI_EVERY == 0) s->picture_lost = 1;
    } else if (!s->has_held_first || first != s->held_first) {
        s->has_held_first = 1;
        s->held_first = first;
        s->held++;
        if (s->held > MAX_HELD_FRAMES) frames_lose(s);
    }
}

/* Vp8Frames.add: frames completed go to s->frames; -1 only if out of memory */
static int frames_add(Stream *s, uint16_t seq, uint32_t ts, int start, int marker, const uint8_t *data, size_t len) {
    if (s->has_next) {
        uint16_t ahead = (uint16_t)(seq - s->next_seq);
        if (ahead >= 0x8000) return 0;
        if (ahead >= CAPACITY) frames_lose(s);
    }
    Slot *slot = &s->slots[seq & MASK];
    if (slot->cap < len) {
        uint8_t *grown = realloc(slot->data, len);
        if (!grown) return -1;
        slot->data = grown;
        slot->cap = len;
    }
    if (len) memcpy(slot->data, data, len);
    slot->len = len;
    slot->used = 1;
    slot->seq = seq;
    slot->ts = ts;
    slot->start = start;
    slot->marker = marker;
    int in_order = s->has_highest && seq == (uint16_t)(s->highest + 1);
    if (!s->has_highest || ((uint16_t)(seq - s->highest)) < 0x8000) {
        s->has_highest = 1;
        s->highest = seq;
    }
    if (in_order && !marker && !start) return 0;
    if (s->has_next) drain(s);
    if (start) beyond(s, (uint16_t)(seq - 1));
    beyond(s, seq);
    return 0;
}

/* vp8_receiver.Nacks.add: 1 when a new hole appeared */
static void nack_truncate(Stream *s, uint16_t max_seq) {
    int n = 0;
    for (int i = 0; i < s->n_missing; i++)
        if ((uint16_t)(max_seq - s->missing[i]) <= HISTORY) s->missing[n++] = s->missing[i];
    s->n_missing = n;
}

static void nack_discard(Stream *s, uint16_t seq) {
    for (int i = 0; i < s->n_missing; i++)
        if (s->missing[i] == seq) { s->missing[i] = s->missing[--s->n_missing]; return; }
}

static int nack_add(Stream *s, uint16_t seq) {
    if (!s->nack_has_max) {
        s->nack_has_max = 1;
        s->nack_max = seq;
        return 0;
    }
    uint16_t max_seq = s->nack_max, ahead = (uint16_t)(seq - max_seq);
    if (ahead == 0 || ahead >= 0x8000) {
        nack_discard(s, seq);
        return 0;
    }
    s->nack_max = seq;
    if (ahead == 1) {
        if (s->n_missing) nack_truncate(s, seq);
        return 0;
    }
    int from = ahead - HISTORY > 1 ? ahead - HISTORY : 1;
    for (int missed = from; missed < ahead; missed++) {
        uint16_t m = (uint16_t)(max_seq + missed);
        int present = 0;
        for (int i = 0; i < s->n_missing; i++)
            if (s->missing[i] == m) { present = 1; break; }
        if (!present && s->n_missing < MAX_MISSING) s->missing[s->n_missing++] = m;
    }
    nack_truncate(s, seq);
    return 1;
}

/* StreamStatistics.add on header fields */
static Stats *stats_for(Stream *s, uint32_t ssrc) {
    Stats *free_slot = NULL;
    for (int i = 0; i < MAX_SSRCS; i++) {
        if (s->stats[i].used && s->stats[i].ssrc == ssrc) return &s->stats[i];
        if (!s->stats[i].used && !free_slot) free_slot = &s->stats[i];
    }
    if (!free_slot) return NULL;
    memset(free_slot, 0, sizeof(Stats));
    free_slot->used = 1;
    free_slot->ssrc = ssrc;
    return free_slot;
}

static void stats_add(Stats *st, uint16_t seq, uint32_t ts) {
    st->received++;
    st->dirty = 1;
    if (!st->has_base) { st->has_base = 1; st->base_seq = seq; }
    if (!st->has_max || (uint16_t)(seq - st->max_seq) - 1u < 0x7FFFu) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t arrival = (int64_t)((now.tv_sec + now.tv_nsec / 1e9) * 90000);
        if (st->has_max && seq < st->max_seq) st->cycles += 1 << 16;
        st->has_max = 1;
        st->max_seq = seq;
        if (st->received > 1 && (!st->has_last || (int64_t)ts != st->last_timestamp)) {
            int64_t diff = (arrival - st->last_arrival) - ((int64_t)ts - st->last_timestamp);
            if (diff < 0) diff = -diff;
            st->jitter_q4 += diff - ((st->jitter_q4 + 8) >> 4);
        }
        st->has_last = 1;
        st->last_arrival = arrival;
        st->last_timestamp = ts;
    }
}

/* one plaintext RTP packet of this stream's SSRCs: 0 taken (or dropped), 1 not VP8 */
static int stream_handle(Stream *s, const uint8_t *d, const Header *h, int64_t arrival) {
    int rtx = s->rtx[h->pt];
    if (!rtx && !s->vp8[h->pt]) return 1;
    s->packets++;
    uint32_t ssrc = h->ssrc;
    uint16_t seq = h->seq;
    Stats *st = stats_for(s, ssrc);
    if (st) stats_add(st, seq, h->ts);
    if (s->remb) {
        int64_t size = s->frame_bytes + (int64_t)(h->end - h->start + h->padding);
        if (h->marker) {
            s->frame_bytes = 0;
            int64_t sent = abs_send_time(d, h, s->abs_id);
            if (sent >= 0 && s->n_rembs < MAX_REMBS) {
                OutRemb *r = &s->rembs[s->n_rembs++];
                r->sent = sent;
                r->arrival = arrival;
                r->size = size;
                r->ssrc = ssrc;
            }
        } else {
            s->frame_bytes = size;
        }
    }
    if (h->marker && st) st->marker = 1;
    size_t start = h->start;
    if (rtx) {
        int found = 0;
        for (int i = 0; i < s->n_rtx_ssrc; i++)
            if (s->rtx_ssrc[i].rtx == ssrc) { ssrc = s->rtx_ssrc[i].original; found = 1; break; }
        if (!found || h->end - start < 2) return 0;
        seq = be16(d + start);
        start += 2;
    }
    s->media_ssrc = ssrc;
    s->has_media_ssrc = 1;
    if (nack_add(s, seq)) {
        s->nack_due = 1;
        s->nack_ssrc = ssrc;
    }
    int frame_start;
    long pos = vp8_descriptor(d, start, h->end, &frame_start);
    if (pos < 0) return 0;
    if (frames_add(s, seq, h->ts, frame_start, h->marker, d + pos, h->end - (size_t)pos) < 0) frames_lose(s);
    if (s->picture_lost) {
        s->picture_lost = 0;
        s->pli_due = 1;
        s->pli_ssrc = ssrc;
    }
    return 0;
}

static int rembs_due(Stream *s, int64_t now, int force) {
    return s->n_rembs && (force || s->n_rembs >= MAX_REMBS / 2 || now - s->remb_sent_ms >= REMB_EVERY_MS);
}

static int stats_due(Stream *s, int64_t now, int force) {
    if (!force && now - s->stats_sent_ms < STATS_EVERY_MS) return 0;
    for (int i = 0; i < MAX_SSRCS; i++)
        if (s->stats[i].used && s->stats[i].dirty) return 1;
    return 0;
}

static int stream_pending(Stream *s, int64_t now, int force) {
    return s->n_frames || s->nack_due || s->pli_due || rembs_due(s, now, force) || stats_due(s, now, force);
}

static PyObject *py_int_or_none(int has, long long v) {
    if (has) return PyLong_FromLongLong(v);
    Py_RETURN_NONE;
}

/* Build the callback's arguments from what is pending (under the mutex, GIL held) and
 * clear it. Returns a new tuple, or NULL with an exception. */
static PyObject *stream_take(Stream *s, int64_t now, int force) {
    int with_rembs = rembs_due(s, now, force), with_stats = stats_due(s, now, force);
    PyObject *frames = Py_None, *rembs = Py_None, *nack = Py_None, *pli = Py_None, *stats = Py_None;
    Py_INCREF(Py_None); Py_INCREF(Py_None); Py_INCREF(Py_None); Py_INCREF(Py_None); Py_INCREF(Py_None);
    PyObject *result = NULL;
    if (s->n_frames) {
        Py_DECREF(frames);
        frames = PyList_New(s->n_frames);
        if (!frames) goto done;
        for (int i = 0; i < s->n_frames; i++) {
            OutFrame *f = &s->frames[i];
            PyObject *item = Py_BuildValue("(ky#O)", (unsigned long)f->ts, (const char *)f->data, (Py_ssize_t)f->len,
                                           f->key ? Py_True : Py_False);
            if (!item) goto done;
            PyList_SET_ITEM(frames, i, item);
        }
    }
    if (with_rembs) {
        Py_DECREF(rembs);
        rembs = PyList_New(s->n_rembs);
        if (!rembs) goto done;
        for (int i = 0; i < s->n_rembs; i++) {
            OutRemb *r = &s->rembs[i];
            PyObject *item = Py_BuildValue("(LLLk)", (long long)r->sent, (long long)r->arrival, (long long)r->size,
                                           (unsigned long)r->ssrc);
            if (!item) goto done;
            PyList_SET_ITEM(rembs, i, item);
        }
    }
    if (s->nack_due) {
        /* sorted(missing), as aiortc sends it */
        uint16_t sorted[MAX_MISSING];
        int n = s->n_missing;
        memcpy(sorted, s->missing, n * sizeof(uint16_t));
        for (int i = 1; i < n; i++) {
            uint16_t v = sorted[i];
            int j = i - 1;
            while (j >= 0 && sorted[j] > v) { sorted[j + 1] = sorted[j]; j--; }
            sorted[j + 1] = v;
        }
        PyObject *list = PyList_New(n);
        if (!list) goto done;
        for (int i = 0; i < n; i++) PyList_SET_ITEM(list, i, PyLong_FromLong(sorted[i]));
        Py_DECREF(nack);
        nack = Py_BuildValue("(kN)", (unsigned long)s->nack_ssrc, list);
        if (!nack) goto done;
    }
    if (s->pli_due) {
        Py_DECREF(pli);
        pli = PyLong_FromUnsignedLong(s->pli_ssrc);
        if (!pli) goto done;
    }
    if (with_stats) {
        Py_DECREF(stats);
        stats = PyList_New(0);
        if (!stats) goto done;
        for (int i = 0; i < MAX_SSRCS; i++) {
            Stats *st = &s->stats[i];
            if (!st->used || !st->dirty) continue;
            PyObject *item = Py_BuildValue("(kLNNLLNNO)", (unsigned long)st->ssrc, (long long)st->received,
                                           py_int_or_none(st->has_base, st->base_seq),
                                           py_int_or_none(st->has_max, st->max_seq), (long long)st->cycles,
                                           (long long)st->jitter_q4, py_int_or_none(st->has_last, st->last_arrival),
                                           py_int_or_none(st->has_last, st->last_timestamp),
                                           st->marker ? Py_True : Py_False);
            if (!item || PyList_Append(stats, item) < 0) { Py_XDECREF(item); goto done; }
            Py_DECREF(item);
        }
    }
    result = PyTuple_Pack(5, frames, rembs, nack, pli, stats);
done:
    for (int i = 0; i < s->n_frames; i++) free(s->frames[i].data);
    s->n_frames = 0;
    s->nack_due = s->pli_due = 0;
    if (with_rembs) {
        s->n_rembs = 0;
        s->remb_sent_ms = now;
    }
    if (with_stats) {
        for (int i = 0; i < MAX_SSRCS; i++) s->stats[i].dirty = s->stats[i].marker = 0;
        s->stats_sent_ms = now;
    }
    Py_DECREF(frames); Py_DECREF(rembs); Py_DECREF(nack); Py_DECREF(pli); Py_DECREF(stats);
    return result;
}

/* take what is pending and call the callback (GIL held, mutex not held) */
static void stream_deliver(Stream *s, int force) {
    /* the reader's thread and a Python caller (packets of an SSRC not bound yet) may both
     * deliver; the callback gives the GIL away now and then, so without this its frames
     * could reach the sink out of order */
    if (pthread_mutex_trylock(&s->deliver_mu) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&s->deliver_mu);
        Py_END_ALLOW_THREADS
    }
    pthread_mutex_lock(&mu);
    int64_t now = now_ms(CLOCK_MONOTONIC);
    if (!s->callback || !stream_pending(s, now, force)) {
        pthread_mutex_unlock(&mu);
        pthread_mutex_unlock(&s->deliver_mu);
        return;
    }
    PyObject *args = stream_take(s, now, force);
    pthread_mutex_unlock(&mu);
    if (!args) {
        PyErr_WriteUnraisable((PyObject *)s);
    } else {
        PyObject *callback = Py_NewRef(s->callback);
        PyObject *out = PyObject_Call(callback, args, NULL);
        Py_DECREF(args);
        if (!out) PyErr_WriteUnraisable(callback);
        Py_XDECREF(out);
        Py_DECREF(callback);
    }
    pthread_mutex_unlock(&s->deliver_mu);
}

static int fill_types(uint8_t *table, PyObject *types) {
    PyObject *it = PyObject_GetIter(types);
    if (!it) return -1;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        long pt = PyLong_AsLong(item);
        Py_DECREF(item);
        if (pt == -1 && PyErr_Occurred()) { Py_DECREF(it); return -1; }
        if (pt >= 0 && pt < 128) table[pt] = 1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

static int Stream_init(Stream *s, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"callback", "vp8_types", "rtx_types", "abs_send_time_id", "remb", NULL};
    PyObject *callback, *vp8, *rtx;
    int abs_id = 0, remb = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|ip", kwlist, &callback, &vp8, &rtx, &abs_id, &remb)) return -1;
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable");
        return -1;
    }
    memset(s->vp8, 0, sizeof s->vp8);
    memset(s->rtx, 0, sizeof s->rtx);
    if (fill_types(s->vp8, vp8) < 0 || fill_types(s->rtx, rtx) < 0) return -1;
    Py_XSETREF(s->callback, Py_NewRef(callback));
    s->abs_id = abs_id > 0 && abs_id < 256 ? abs_id : 0;
    s->remb = remb;
    return 0;
}

static PyObject *Stream_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Stream *s = (Stream *)type->tp_alloc(type, 0);
    if (!s) return NULL;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->deliver_mu, &attr);
    pthread_mutexattr_destroy(&attr);
    return (PyObject *)s;
}

static int Stream_traverse(Stream *s, visitproc visit, void *arg) {
    Py_VISIT(s->callback);
    return 0;
}

static int Stream_clear(Stream *s) {
    Py_CLEAR(s->callback);
    return 0;
}

static void Stream_dealloc(Stream *s) {
    PyObject_GC_UnTrack(s);
    Py_CLEAR(s->callback);
    pthread_mutex_destroy(&s->deliver_mu);
    for (int i = 0; i < CAPACITY; i++) free(s->slots[i].data);
    for (int i = 0; i < s->n_frames; i++) free(s->frames[i].data);
    free(s->frames);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *Stream_set_rtx_ssrc(Stream *s, PyObject *args) {
    unsigned long rtx, original;
    if (!PyArg_ParseTuple(args, "kk", &rtx, &original)) return NULL;
    pthread_mutex_lock(&mu);
    int i;
    for (i = 0; i < s->n_rtx_ssrc; i++)
        if (s->rtx_ssrc[i].rtx == (uint32_t)rtx) break;
    if (i < MAX_SSRCS) {
        s->rtx_ssrc[i].rtx = (uint32_t)rtx;
        s->rtx_ssrc[i].original = (uint32_t)original;
        if (i == s->n_rtx_ssrc) s->n_rtx_ssrc++;
    }
    pthread_mutex_unlock(&mu);
    Py_RETURN_NONE;
}

/* handle(data, arrival_ms) -> bool: one plaintext RTP packet from Python; False if it is
 * not VP8 of this stream (or does not parse). What it completes is delivered at once. */
static PyObject *Stream_handle(Stream *s, PyObject *args) {
    Py_buffer buf;
    long long arrival;
    if (!PyArg_ParseTuple(args, "y*L", &buf, &arrival)) return NULL;
    Header h;
    int taken = 0;
    pthread_mutex_lock(&mu);
    if (parse_header(buf.buf, (size_t)buf.len, &h) == 0) taken = stream_handle(s, buf.buf, &h, arrival) == 0;
    pthread_mutex_unlock(&mu);
    PyBuffer_Release(&buf);
    if (taken) stream_deliver(s, 0);
    return PyBool_FromLong(taken);
}

/* _assemble(seq, ts, start, marker, data) -> (frames, picture_lost): the assembler alone (tests) */
static PyObject *Stream_assemble(Stream *s, PyObject *args) {
    unsigned int seq;
    unsigned long ts;
    int start, marker;
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "Ikppy*", &seq, &ts, &start, &marker, &buf)) return NULL;
    pthread_mutex_lock(&mu);
    int failed = frames_add(s, (uint16_t)seq, (uint32_t)ts, start, marker, buf.buf, (size_t)buf.len) < 0;
    PyBuffer_Release(&buf);
    int lost = s->picture_lost;
    s->picture_lost = 0;
    PyObject *frames = PyList_New(0);
    for (int i = 0; frames && i < s->n_frames; i++) {
        OutFrame *f = &s->frames[i];
        PyObject *item = Py_BuildValue("(ky#O)", (unsigned long)f->ts, (const char *)f->data, (Py_ssize_t)f->len,
                                       f->key ? Py_True : Py_False);
        if (!item || PyList_Append(frames, item) < 0) Py_CLEAR(frames);
        Py_XDECREF(item);
    }
    for (int i = 0; i < s->n_frames; i++) free(s->frames[i].data);
    s->n_frames = 0;
    pthread_mutex_unlock(&mu);
    if (failed) {
        Py_XDECREF(frames);
        return PyErr_NoMemory();
    }
    if (!frames) return NULL;
    return Py_BuildValue("(NO)", frames, lost ? Py_True : Py_False);
}

static PyObject *Stream_flush(Stream *s, PyObject *unused) {
    stream_deliver(s, 1);
    Py_RETURN_NONE;
}

static PyObject *Stream_missing(Stream *s, PyObject *unused) {
    pthread_mutex_lock(&mu);
    PyObject *set = PySet_New(NULL);
    for (int i = 0; set && i < s->n_missing; i++) {
        PyObject *v = PyLong_FromLong(s->missing[i]);
        if (!v || PySet_Add(set, v) < 0) Py_CLEAR(set);
        Py_XDECREF(v);
    }
    pthread_mutex_unlock(&mu);
    return set;
}

static PyObject *Stream_get_frames_out(Stream *s, void *c) { return PyLong_FromLongLong(s->frames_out); }
static PyObject *Stream_get_dropped(Stream *s, void *c) { return PyLong_FromLongLong(s->dropped_frames); }
static PyObject *Stream_get_packets(Stream *s, void *c) { return PyLong_FromLongLong(s->packets); }
static PyObject *Stream_get_waiting(Stream *s, void *c) { return PyBool_FromLong(!s->has_next); }
static PyObject *Stream_get_ssrc(Stream *s, void *c) {
    if (!s->has_media_ssrc) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(s->media_ssrc);
}

static PyMethodDef Stream_methods[] = {
    {"set_rtx_ssrc", (PyCFunction)Stream_set_rtx_ssrc, METH_VARARGS, "Map an RTX SSRC to its original."},
    {"handle", (PyCFunction)Stream_handle, METH_VARARGS, "Receive one plaintext RTP packet."},
    {"_assemble", (PyCFunction)Stream_assemble, METH_VARARGS, "The frame assembler alone (tests)."},
    {"flush", (PyCFunction)Stream_flush, METH_NOARGS, "Deliver what is pending, statistics included."},
    {"_missing", (PyCFunction)Stream_missing, METH_NOARGS, "The NACK generator's missing set (tests)."},
    {NULL}};

static PyGetSetDef Stream_getset[] = {
    {"frames_out", (getter)Stream_get_frames_out, NULL, "frames handed out", NULL},
    {"dropped_frames", (getter)Stream_get_dropped, NULL, "frames dropped", NULL},
    {"packets", (getter)Stream_get_packets, NULL, "VP8 and RTX packets received", NULL},
    {"waiting_keyframe", (getter)Stream_get_waiting, NULL, "waiting for a keyframe", NULL},
    {"ssrc", (getter)Stream_get_ssrc, NULL, "the media SSRC of the last VP8 packet, or None", NULL},
    {NULL}};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "plugins.webrtc._rtpin.Vp8Stream",
    .tp_basicsize = sizeof(Stream),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One VP8 receiver: statistics, RTX, NACK, REMB samples and frames.",
    .tp_new = Stream_new,
    .tp_traverse = (traverseproc)Stream_traverse,
    .tp_clear = (inquiry)Stream_clear,
    .tp_free = PyObject_GC_Del,
    .tp_init = (initproc)Stream_init,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_methods = Stream_methods,
    .tp_getset = Stream_getset,
};

/* ------------------------------------------------------------------ the reader */
typedef struct {
    uint8_t kind; /* 0: not SRTP (with its address), 1: RTCP (plaintext), 2: RTP (plaintext) */
    uint8_t *data;
    size_t len;
    struct sockaddr_storage addr;
    socklen_t addr_len;
} Other;

typedef struct {
    PyObject_HEAD
    int fd, wake_fd;
    pthread_t thread;
    int running;
    volatile int stopping;
    srtp_fn unprotect, unprotect_rtcp;
    void *session;
    PyObject *keep, *on_other;
    struct { uint32_t ssrc; Stream *stream; } binds[MAX_BINDS];
    int n_binds;
    Other *others;
    int n_others, cap_others;
    long long rx_bytes, rx_packets, dropped, reported_bytes, reported_packets, wakeups, datagrams;
    int64_t reported_ms;
} Reader;

static void push_other(Reader *r, int kind, const uint8_t *data, size_t len, const struct sockaddr_storage *addr,
                       socklen_t addr_len) {
    if (r->n_others == r->cap_others) {
        int cap = r->cap_others ? 2 * r->cap_others : 16;
        if (cap > 4096) { r->dropped++; return; } /* Python is far behind: drop rather than grow */
        Other *grown = realloc(r->others, cap * sizeof(Other));
        if (!grown) { r->dropped++; return; }
        r->others = grown;
        r->cap_others = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) { r->dropped++; return; }
    memcpy(copy, data, len);
    Other *o = &r->others[r->n_others++];
    o->kind = (uint8_t)kind;
    o->data = copy;
    o->len = len;
    o->addr_len = addr_len;
    if (addr && addr_len) memcpy(&o->addr, addr, addr_len);
}

/* one datagram (mutex held) */
static void reader_datagram(Reader *r, uint8_t *d, size_t len, const struct sockaddr_storage *addr,
                            socklen_t addr_len, int64_t arrival) {
    if (!len) return;
    if (d[0] > 127 && d[0] < 192) {
        r->rx_bytes += (long long)len;
        r->rx_packets++;
        if (len > INT32_MAX) return;
        int n = (int)len;
        if (len >= 2 && d[1] >= 192 && d[1] <= 208) { /* aiortc's is_rtcp */
            if (r->unprotect_rtcp(r->session, d, &n) != 0 || n < 0 || (size_t)n > len) return;
            push_other(r, 1, d, (size_t)n, NULL, 0);
            return;
        }
        if (r->unprotect(r->session, d, &n) != 0 || n < 0 || (size_t)n > len) return; /* fails auth: dropped */
        Header h;
        if (parse_header(d, (size_t)n, &h) == 0) {
            for (int i = 0; i < r->n_binds; i++) {
                if (r->binds[i].ssrc == h.ssrc) {
                    if (stream_handle(r->binds[i].stream, d, &h, arrival) == 0) return;
                    break;
                }
            }
        }
        push_other(r, 2, d, (size_t)n, NULL, 0);
        return;
    }
    push_other(r, 0, d, len, addr, addr_len);
}

static PyObject *sockaddr_to_py(const struct sockaddr_storage *a, socklen_t len) {
    char host[64];
    if (a->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a;
        if (!inet_ntop(AF_INET, &in->sin_addr, host, sizeof host)) Py_RETURN_NONE;
        return Py_BuildValue("(si)", host, ntohs(in->sin_port));
    }
    if (a->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host)) Py_RETURN_NONE;
        return Py_BuildValue("(siIk)", host, ntohs(in6->sin6_port), ntohl(in6->sin6_flowinfo),
                             (unsigned long)in6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* hand Python what is pending (GIL held, mutex not held) */
static void reader_deliver(Reader *r) {
    Stream *streams[MAX_BINDS];
    int n = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < r->n_binds; i++) {
        Stream *s = r->binds[i].stream;
        int seen = 0;
        for (int j = 0; j < n; j++) seen |= streams[j] == s;
        if (!seen) { Py_INCREF(s); streams[n++] = s; }
    }
    Other *others = r->others;
    int n_others = r->n_others;
    r->others = NULL;
    r->n_others = r->cap_others = 0;
    long long bytes = r->rx_bytes - r->reported_bytes, packets = r->rx_packets - r->reported_packets;
    int64_t now = now_ms(CLOCK_MONOTONIC);
    int counters_due = (bytes || packets) && (n_others || now - r->reported_ms >= 1000);
    if (counters_due || n_others) {
        r->reported_bytes = r->rx_bytes;
        r->reported_packets = r->rx_packets;
        r->reported_ms = now;
    } else {
        bytes = packets = 0;
    }
    pthread_mutex_unlock(&mu);
    for (int j = 0; j < n; j++) {
        stream_deliver(streams[j], 0);
        Py_DECREF(streams[j]);
    }
    if (n_others || counters_due) {
        PyObject *list = PyList_New(0);
        for (int i = 0; list && i < n_others; i++) {
            Other *o = &others[i];
            PyObject *addr = o->kind == 0 ? sockaddr_to_py(&o->addr, o->addr_len) : Py_NewRef(Py_None);
            PyObject *item = addr ? Py_BuildValue("(iy#N)", o->kind, (const char *)o->data, (Py_ssize_t)o->len, addr)
                                  : NULL;
            if (!item || PyList_Append(list, item) < 0) Py_CLEAR(list);
            Py_XDECREF(item);
        }
        if (list && !r->on_other) {
            Py_DECREF(list);
        } else if (list) {
            PyObject *out = PyObject_CallFunction(r->on_other, "(NLL)", list, bytes, packets);
            if (!out) PyErr_WriteUnraisable(r->on_other);
            Py_XDECREF(out);
        } else {
            PyErr_WriteUnraisable((PyObject *)r);
        }
    }
    for (int i = 0; i < n_others; i++) free(others[i].data);
    free(others);
}

static int reader_has_pending(Reader *r) {
    if (r->n_others) return 1;
    int64_t now = now_ms(CLOCK_MONOTONIC);
    for (int i = 0; i < r->n_binds; i++)
        if (stream_pending(r->binds[i].stream, now, 0)) return 1;
    return (r->rx_packets != r->reported_packets) && now - r->reported_ms >= 1000;
}

static void *reader_main(void *arg) {
    Reader *r = arg;
    pthread_setname_np(pthread_self(), "rtp-in");
    PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState *tstate = PyEval_SaveThread();
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage addrs[BATCH];
    uint8_t *bufs = malloc((size_t)BATCH * BUF_SIZE);
    struct pollfd fds[2] = {{.fd = r->fd, .events = POLLIN}, {.fd = r->wake_fd, .events = POLLIN}};
    while (bufs && !r->stopping) {
        int ready = poll(fds, 2, 500);
        if (r->stopping || (ready > 0 && fds[1].revents)) break;
        if (ready > 0 && (fds[0].revents & POLLNVAL)) break;
        if (ready > 0) {
            r->wakeups++;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    iov[i].iov_base = bufs + (size_t)i * BUF_SIZE;
                    iov[i].iov_len = BUF_SIZE;
                    memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
                    msgs[i].msg_hdr.msg_iov = &iov[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                    msgs[i].msg_hdr.msg_name = &addrs[i];
                    msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
                }
                int got = recvmmsg(r->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) {
                    if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        int err;
                        socklen_t len = sizeof err;
                        getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len); /* clears an ICMP error */
                        if (errno == EBADF || errno == ENOTSOCK) r->stopping = 1;
                    }
                    break;
                }
                int64_t arrival = now_ms(CLOCK_REALTIME);
                r->datagrams += got;
                pthread_mutex_lock(&mu);
                for (int i = 0; i < got; i++) {
                    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) { r->dropped++; continue; }
                    reader_datagram(r, bufs + (size_t)i * BUF_SIZE, msgs[i].msg_len, &addrs[i],
                                    msgs[i].msg_hdr.msg_namelen, arrival);
                }
                pthread_mutex_unlock(&mu);
                if (got < BATCH) break;
            }
        }
        pthread_mutex_lock(&mu);
        int pending = reader_has_pending(r);
        pthread_mutex_unlock(&mu);
        if (pending) {
            PyEval_RestoreThread(tstate);
            if (!r->stopping) reader_deliver(r);
            tstate = PyEval_SaveThread();
        }
    }
    free(bufs);
    PyEval_RestoreThread(tstate);
    PyGILState_Release(gil);
    return NULL;
}

static int Reader_init(Reader *r, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "unprotect", "unprotect_rtcp", "session", "keep", "on_other", NULL};
    int fd;
    unsigned long long unprotect, unprotect_rtcp, session;
    PyObject *keep, *on_other;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iKKKOO", kwlist, &fd, &unprotect, &unprotect_rtcp, &session, &keep,
                                     &on_other))
        return -1;
    if (r->fd > 0 || r->running) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    if (!unprotect || !unprotect_rtcp || !session || !PyCallable_Check(on_other)) {
        PyErr_SetString(PyExc_ValueError, "need the SRTP functions, a session and a callable");
        return -1;
    }
    r->fd = dup(fd);
    if (r->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->wake_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    r->unprotect = (srtp_fn)(uintptr_t)unprotect;
    r->unprotect_rtcp = (srtp_fn)(uintptr_t)unprotect_rtcp;
    r->session = (void *)(uintptr_t)session;
    Py_XSETREF(r->keep, Py_NewRef(keep));
    Py_XSETREF(r->on_other, Py_NewRef(on_other));
    return 0;
}

static PyObject *Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Reader *r = (Reader *)type->tp_alloc(type, 0);
    if (r) r->fd = r->wake_fd = -1;
    return (PyObject *)r;
}

static PyObject *Reader_bind(Reader *r, PyObject *args) {
    unsigned long ssrc;
    PyObject *stream;
    if (!PyArg_ParseTuple(args, "kO!", &ssrc, &StreamType, &stream)) return NULL;
    pthread_mutex_lock(&mu);
    int i;
    for (i = 0; i < r->n_binds; i++)
        if (r->binds[i].ssrc == (uint32_t)ssrc) break;
    int ok = i < MAX_BINDS;
    if (ok) {
        Stream *old = i < r->n_binds ? r->binds[i].stream : NULL;
        Py_INCREF(stream);
        r->binds[i].ssrc = (uint32_t)ssrc;
        r->binds[i].stream = (Stream *)stream;
        if (i == r->n_binds) r->n_binds++;
        pthread_mutex_unlock(&mu);
        Py_XDECREF(old);
    } else {
        pthread_mutex_unlock(&mu);
    }
    return PyBool_FromLong(ok);
}

static PyObject *Reader_start(Reader *r, PyObject *unused) {
    if (r->running || r->fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "not startable");
        return NULL;
    }
    r->reported_ms = now_ms(CLOCK_MONOTONIC);
    Py_INCREF(r); /* the thread's reference, dropped by stop() */
    int err = pthread_create(&r->thread, NULL, reader_main, r);
    if (err) {
        Py_DECREF(r);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    r->running = 1;
    Py_RETURN_NONE;
}

static void reader_stop(Reader *r) {
    if (!r->running) return;
    r->stopping = 1;
    uint64_t one = 1;
    if (write(r->wake_fd, &one, sizeof one) < 0) { /* poll's timeout ends it anyway */ }
    r->running = 0;
    if (pthread_equal(r->thread, pthread_self())) {
        pthread_detach(r->thread);
    } else {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(r->thread, NULL);
        Py_END_ALLOW_THREADS
        close(r->fd); /* the socket is released with the transport's own fd */
        r->fd = -1;
    }
}

static PyObject *Reader_stop(Reader *r, PyObject *unused) {
    int was_running = r->running;
    reader_stop(r);
    if (was_running) Py_DECREF(r);
    Py_RETURN_NONE;
}

static void reader_unbind(Reader *r) {
    pthread_mutex_lock(&mu);
    int n = r->n_binds;
    Stream *streams[MAX_BINDS];
    for (int i = 0; i < n; i++) streams[i] = r->binds[i].stream;
    r->n_binds = 0;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n; i++) Py_DECREF(streams[i]);
}

static int Reader_traverse(Reader *r, visitproc visit, void *arg) {
    Py_VISIT(r->keep);
    Py_VISIT(r->on_other);
    for (int i = 0; i < r->n_binds; i++) Py_VISIT(r->binds[i].stream);
    return 0;
}

static int Reader_clear(Reader *r) {
    if (r->running) return 0; /* not garbage while its thread runs: the thread holds a reference */
    reader_unbind(r);
    Py_CLEAR(r->on_other);
    Py_CLEAR(r->keep);
    return 0;
}

static void Reader_dealloc(Reader *r) {
    PyObject_GC_UnTrack(r);
    reader_stop(r); /* not running here unless start() failed half-way: stop() holds a reference */
    reader_unbind(r);
    if (r->fd >= 0) close(r->fd);
    if (r->wake_fd >= 0) close(r->wake_fd);
    for (int i = 0; i < r->n_others; i++) free(r->others[i].data);
    free(r->others);
    Py_CLEAR(r->keep);
    Py_CLEAR(r->on_other);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* feed(data) -> None: one datagram as if read from the socket, delivered at once (tests) */
static PyObject *Reader_feed(Reader *r, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "y*", &buf)) return NULL;
    uint8_t *copy = malloc(buf.len ? (size_t)buf.len : 1);
    if (!copy) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    memcpy(copy, buf.buf, (size_t)buf.len);
    size_t len = (size_t)buf.len;
    PyBuffer_Release(&buf);
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    pthread_mutex_lock(&mu);
    reader_datagram(r, copy, len, &addr, 0, now_ms(CLOCK_REALTIME));
    pthread_mutex_unlock(&mu);
    free(copy);
    reader_deliver(r);
    Py_RETURN_NONE;
}

static PyObject *Reader_get_running(Reader *r, void *c) { return PyBool_FromLong(r->running); }
static PyObject *Reader_get_dropped(Reader *r, void *c) { return PyLong_FromLongLong(r->dropped); }
static PyObject *Reader_get_wakeups(Reader *r, void *c) { return PyLong_FromLongLong(r->wakeups); }
static PyObject *Reader_get_datagrams(Reader *r, void *c) { return PyLong_FromLongLong(r->datagrams); }

static PyMethodDef Reader_methods[] = {
    {"bind", (PyCFunction)Reader_bind, METH_VARARGS, "Hand an SSRC's packets to a Vp8Stream."},
    {"start", (PyCFunction)Reader_start, METH_NOARGS, "Start reading on the native thread."},
    {"stop", (PyCFunction)Reader_stop, METH_NOARGS, "Stop reading and join the thread."},
    {"feed", (PyCFunction)Reader_feed, METH_VARARGS, "One datagram, as if read (tests)."},
    {NULL}};

static PyGetSetDef Reader_getset[] = {
    {"running", (getter)Reader_get_running, NULL, "the thread runs", NULL},
    {"dropped", (getter)Reader_get_dropped, NULL, "datagrams dropped (truncated, no memory)", NULL},
    {"wakeups", (getter)Reader_get_wakeups, NULL, "times the socket was found readable", NULL},
    {"datagrams", (getter)Reader_get_datagrams, NULL, "datagrams read", NULL},
    {NULL}};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "plugins.webrtc._rtpin.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Reads one ICE socket on a native thread.",
    .tp_new = Reader_new,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_free = PyObject_GC_Del,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rtpin", "The native VP8 receive path.", -1, NULL};

PyMODINIT_FUNC PyInit__rtpin(void) {
    if (PyType_Ready(&StreamType) < 0 || PyType_Ready(&ReaderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Vp8Stream", (PyObject *)&StreamType) < 0 ||
        PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "CAPACITY", CAPACITY);
    return m;
}
