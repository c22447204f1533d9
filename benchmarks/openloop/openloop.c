/*
 * openloop: an open-loop HTTP/1.1 load generator for the meshproxy benchmarks.
 *
 * Request i is due at start + i / rate whatever happened to the earlier ones,
 * and its latency runs from that due time to the last byte of its response, so
 * a stalled server delays every request that should have been sent during the
 * stall (a closed-loop client would show only the few on the wire). Requests
 * go out one at a time on a fixed pool of keep-alive connections; a request
 * that finds every connection busy waits in a FIFO and the wait is part of
 * its latency. Nothing is dropped without being counted: every scheduled
 * request ends as a response, a timeout or a lost one with its error kind.
 *
 *   openloop --rate 1000 --duration 10 --connections 50 [-H 'Name: value'] http://127.0.0.1:8080/
 *   openloop --self-test
 *
 * Output: one JSON object on stdout (see print_result). Plain C11 + POSIX +
 * Linux epoll/timerfd; built by benchmarks/lib/openloop.py with `cc -O2`.
 */

#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define MAX_HEAD 16384          /* a response head (or trailer section) larger than this is a parse error */
#define MAX_CHUNK_EXT 1024
#define SWEEP_NS (10 * NS_PER_MS)       /* how often timeouts and reconnect delays are looked at */
#define RECONNECT_DELAY_NS (100 * NS_PER_MS)
#define START_LEAD_NS (5 * NS_PER_MS)   /* first due time after the pool is up, so it is not late already */
#define CONNECT_WAIT_NS (5 * NS_PER_S)  /* for the whole pool before the first send */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* ---- histogram ------------------------------------------------------------------------
 *
 * Log-linear, in nanoseconds: values below 256 have a bucket each; above,
 * every power of two [2^m, 2^(m+1)) is cut into 128 equal buckets, so a
 * bucket is at most 1/128 of its lower bound wide. A percentile is reported
 * as its bucket's highest value (capped at the exact maximum): never below
 * the true value, and at most 0.78% above it.
 */
#define H_SUB_BITS 7
#define H_SUB (1 << H_SUB_BITS)
#define H_EXACT (2 * H_SUB)
#define H_TOP_BITS 40           /* up to 2^40 ns, about 18 minutes; larger values land in the top bucket */
#define H_BUCKETS (H_EXACT + (H_TOP_BITS - H_SUB_BITS - 1) * H_SUB)

struct hist {
    uint64_t counts[H_BUCKETS];
    uint64_t n;
    int64_t min, max;
    double sum;
};

static int hist_index(int64_t v)
{
    if (v < H_EXACT)
        return (int)v;
    if (v >= (1LL << H_TOP_BITS))
        v = (1LL << H_TOP_BITS) - 1;
    int m = 63 - __builtin_clzll((unsigned long long)v);   /* 2^m <= v < 2^(m+1), m >= 8 */
    int shift = m - H_SUB_BITS;
    return H_EXACT + (m - H_SUB_BITS - 1) * H_SUB + (int)((v >> shift) - H_SUB);
}

static int64_t hist_bucket_high(int index)
{
    if (index < H_EXACT)
        return index;
    int group = (index - H_EXACT) / H_SUB;
    int shift = group + 1;
    int64_t low = (int64_t)(H_SUB + (index - H_EXACT) % H_SUB) << shift;
    return low + (1LL << shift) - 1;
}

static void hist_record(struct hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (h->n == 0 || v > h->max)
        h->max = v;
    h->n++;
    h->sum += (double)v;
}

/* Nearest rank: the smallest value with at least p% of the samples at or below it. */
static int64_t hist_percentile(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(p / 100.0 * (double)h->n - 1e-9);
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            int64_t high = hist_bucket_high(i);
            return high < h->max ? high : h->max;
        }
    }
    return h->max;
}

/* ---- response parser (sans-IO: bytes in, a verdict out) --------------------------------
 *
 * Strict on purpose: what it cannot frame exactly is an error, never a guess.
 * HTTP/1.1 status line; CRLF line ends only; no obs-fold; Content-Length as
 * plain digits (repeats must agree); Transfer-Encoding only as exactly
 * "chunked" and never together with Content-Length; a response with a body
 * and neither cannot end on a kept-alive connection, so it is an error; 1xx
 * interim responses are skipped (101 is an error: no upgrade was asked for).
 */
enum rp_result { RP_NEED_MORE, RP_DONE, RP_ERROR };

enum rp_state {
    RP_HEAD, RP_BODY,
    RP_CHUNK_SIZE, RP_CHUNK_EXT, RP_CHUNK_SIZE_LF, RP_CHUNK_DATA, RP_CHUNK_DATA_CR, RP_CHUNK_DATA_LF,
    RP_TRAILER, RP_TRAILER_LF, RP_FINISHED,
};

struct rparser {
    enum rp_state state;
    char head[MAX_HEAD];
    size_t head_len;
    int status;
    bool close;                 /* the response said Connection: close */
    uint64_t remaining;         /* body or chunk bytes still to come */
    int size_digits;
    size_t line_len;            /* chunk extension or trailer line so far */
    size_t trailer_len;
    const char *error;
};

static void rp_reset(struct rparser *p)
{
    p->state = RP_HEAD;
    p->head_len = 0;
    p->status = 0;
    p->close = false;
    p->remaining = 0;
    p->size_digits = 0;
    p->line_len = 0;
    p->trailer_len = 0;
    p->error = NULL;
}

static enum rp_result rp_fail(struct rparser *p, const char *why)
{
    p->error = why;
    return RP_ERROR;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool field_char_ok(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool token_eq(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* Whether the comma-separated list s[0..n) has the token ``word``. */
static bool list_has(const char *s, size_t n, const char *word)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        size_t start = i;
        while (i < n && s[i] != ',' && s[i] != ' ' && s[i] != '\t')
            i++;
        if (i > start && token_eq(s + start, i - start, word))
            return true;
    }
    return false;
}

/* The complete head is in p->head (ending CRLF CRLF): check it and choose the body framing. */
static enum rp_result rp_head_done(struct rparser *p)
{
    const char *h = p->head;
    size_t end = p->head_len - 2;       /* the final empty line's CRLF */
    const char *eol = memmem(h, end, "\r\n", 2);
    size_t line = (size_t)(eol - h);
    if (line < 12 || memcmp(h, "HTTP/1.1 ", 9) != 0)
        return rp_fail(p, "status line is not HTTP/1.1");
    if (!isdigit((unsigned char)h[9]) || !isdigit((unsigned char)h[10]) || !isdigit((unsigned char)h[11]))
        return rp_fail(p, "status code is not 3 digits");
    if (line > 12 && h[12] != ' ')
        return rp_fail(p, "no space after the status code");
    for (size_t i = 12; i < line; i++)
        if (!field_char_ok((unsigned char)h[i]))
            return rp_fail(p, "control character in the reason phrase");
    int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    if (status < 100)
        return rp_fail(p, "status code below 100");

    bool have_length = false, chunked = false;
    uint64_t length = 0;
    size_t pos = line + 2;
    while (pos < end) {
        const char *s = h + pos;
        size_t n = (size_t)((const char *)memmem(s, end - pos, "\r\n", 2) - s);
        pos += n + 2;
        if (s[0] == ' ' || s[0] == '\t')
            return rp_fail(p, "obsolete line folding");
        const char *colon = memchr(s, ':', n);
        if (colon == NULL || colon == s)
            return rp_fail(p, "header line without a name");
        size_t name_len = (size_t)(colon - s);
        for (size_t i = 0; i < name_len; i++)
            if (!is_tchar((unsigned char)s[i]))
                return rp_fail(p, "invalid character in a header name");
        const char *v = colon + 1, *v_end = s + n;
        while (v < v_end && (*v == ' ' || *v == '\t'))
            v++;
        while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
            v_end--;
        size_t v_len = (size_t)(v_end - v);
        for (size_t i = 0; i < v_len; i++)
            if (!field_char_ok((unsigned char)v[i]))
                return rp_fail(p, "control character in a header value");
        if (token_eq(s, name_len, "content-length")) {
            if (v_len == 0 || v_len > 15)
                return rp_fail(p, "bad Content-Length");
            uint64_t value = 0;
            for (size_t i = 0; i < v_len; i++) {
                if (!isdigit((unsigned char)v[i]))
                    return rp_fail(p, "bad Content-Length");
                value = value * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_length && value != length)
                return rp_fail(p, "conflicting Content-Length headers");
            have_length = true;
            length = value;
        } else if (token_eq(s, name_len, "transfer-encoding")) {
            if (chunked || !token_eq(v, v_len, "chunked"))
                return rp_fail(p, "Transfer-Encoding other than one \"chunked\"");
            chunked = true;
        } else if (token_eq(s, name_len, "connection")) {
            if (list_has(v, v_len, "close"))
                p->close = true;
        }
    }

    if (status < 200) {
        if (status == 101)
            return rp_fail(p, "101 Switching Protocols without an upgrade request");
        p->head_len = 0;                /* interim: the final response follows */
        p->close = false;
        return RP_NEED_MORE;
    }
    p->status = status;
    if (chunked && have_length)
        return rp_fail(p, "both Content-Length and Transfer-Encoding");
    if (status == 204 || status == 304) {
        p->state = RP_FINISHED;
        return RP_DONE;
    }
    if (chunked) {
        p->state = RP_CHUNK_SIZE;
        p->size_digits = 0;
        p->remaining = 0;
        return RP_NEED_MORE;
    }
    if (!have_length)
        return rp_fail(p, "neither Content-Length nor chunked: the end cannot be found");
    p->remaining = length;
    p->state = length ? RP_BODY : RP_FINISHED;
    return length ? RP_NEED_MORE : RP_DONE;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/*
 * Feed bytes of one response. RP_DONE: it ended after *used bytes (any rest
 * belongs to something else). RP_NEED_MORE: all consumed. RP_ERROR: p->error.
 */
static enum rp_result rp_feed(struct rparser *p, const char *data, size_t len, size_t *used)
{
    size_t i = 0;
    enum rp_result r = RP_NEED_MORE;
    while (i < len && r == RP_NEED_MORE) {
        unsigned char c = (unsigned char)data[i];
        switch (p->state) {
        case RP_HEAD:
            if (p->head_len == MAX_HEAD) {
                r = rp_fail(p, "response head too large");
                break;
            }
            if (c == '\n' && (p->head_len == 0 || p->head[p->head_len - 1] != '\r')) {
                r = rp_fail(p, "bare LF in the head");
                break;
            }
            if (p->head_len > 0 && p->head[p->head_len - 1] == '\r' && c != '\n') {
                r = rp_fail(p, "bare CR in the head");
                break;
            }
            p->head[p->head_len++] = (char)c;
            i++;
            if (c == '\n' && p->head_len == 2) {
                r = rp_fail(p, "empty line before the status line");
            } else if (c == '\n' && p->head_len >= 4 && memcmp(p->head + p->head_len - 4, "\r\n\r\n", 4) == 0) {
                r = rp_head_done(p);
            }
            break;
        case RP_BODY: {
            size_t take = len - i;
            if (take > p->remaining)
                take = (size_t)p->remaining;
            p->remaining -= take;
            i += take;
            if (p->remaining == 0) {
                p->state = RP_FINISHED;
                r = RP_DONE;
            }
            break;
        }
        case RP_CHUNK_SIZE: {
            int d = hex_value(c);
            if (d >= 0) {
                if (++p->size_digits > 15) {
                    r = rp_fail(p, "chunk size too large");
                    break;
                }
                p->remaining = p->remaining * 16 + (uint64_t)d;
            } else if (p->size_digits > 0 && (c == ';' || c == ' ' || c == '\t')) {
                p->state = RP_CHUNK_EXT;
                p->line_len = 0;
            } else if (p->size_digits > 0 && c == '\r') {
                p->state = RP_CHUNK_SIZE_LF;
            } else {
                r = rp_fail(p, "bad chunk size line");
                break;
            }
            i++;
            break;
        }
        case RP_CHUNK_EXT:
            if (c == '\r') {
                p->state = RP_CHUNK_SIZE_LF;
            } else if (!field_char_ok(c) || ++p->line_len > MAX_CHUNK_EXT) {
                r = rp_fail(p, "bad chunk extension");
                break;
            }
            i++;
            break;
        case RP_CHUNK_SIZE_LF:
            if (c != '\n') {
                r = rp_fail(p, "chunk size line not ended by CRLF");
                break;
            }
            i++;
            if (p->remaining == 0) {
                p->state = RP_TRAILER;
                p->line_len = 0;
            } else {
                p->state = RP_CHUNK_DATA;
            }
            break;
        case RP_CHUNK_DATA: {
            size_t take = len - i;
            if (take > p->remaining)
                take = (size_t)p->remaining;
            p->remaining -= take;
            i += take;
            if (p->remaining == 0)
                p->state = RP_CHUNK_DATA_CR;
            break;
        }
        case RP_CHUNK_DATA_CR:
        case RP_CHUNK_DATA_LF:
            if (c != (p->state == RP_CHUNK_DATA_CR ? '\r' : '\n')) {
                r = rp_fail(p, "chunk data not followed by CRLF");
                break;
            }
            i++;
            if (p->state == RP_CHUNK_DATA_CR) {
                p->state = RP_CHUNK_DATA_LF;
            } else {
                p->state = RP_CHUNK_SIZE;
                p->size_digits = 0;
                p->remaining = 0;
            }
            break;
        case RP_TRAILER:
            if (++p->trailer_len > MAX_HEAD) {
                r = rp_fail(p, "trailer section too large");
                break;
            }
            if (c == '\r') {
                p->state = RP_TRAILER_LF;
            } else if (!field_char_ok(c)) {
                r = rp_fail(p, "bad trailer line");
                break;
            } else {
                p->line_len++;
            }
            i++;
            break;
        case RP_TRAILER_LF:
            if (c != '\n') {
                r = rp_fail(p, "trailer line not ended by CRLF");
                break;
            }
            i++;
            if (p->line_len == 0) {
                p->state = RP_FINISHED;
                r = RP_DONE;
            } else {
                p->state = RP_TRAILER;
                p->line_len = 0;
            }
            break;
        case RP_FINISHED:
            r = RP_DONE;
            break;
        }
    }
    *used = i;
    return r;
}

/* ---- the run ---------------------------------------------------------------------------- */

enum err_kind { E_CONNECT, E_READ, E_PARSE, E_STATUS, E_TIMEOUT, E_KINDS };
static const char *const ERR_NAMES[E_KINDS] = {"connect", "read", "parse", "status", "timeout"};

enum conn_state { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };

struct conn {
    int fd;
    enum conn_state state;
    uint32_t events;            /* what epoll watches for */
    int64_t since;              /* C_CONNECTING: connect started; C_DOWN: retry not before this */
    int64_t intended, sent;     /* the request in flight */
    size_t wrote;
    struct rparser parser;
};

struct config {
    const char *url;
    double rate, duration_s, timeout_s;
    int connections;
    char *request;
    size_t request_len;
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

struct run {
    const struct config *cfg;
    struct conn *conns;
    int *idle;                  /* ring of idle connection indexes, least recently used first */
    int idle_head, n_idle;
    int epfd, tfd;
    int64_t start, timeout_ns, total;
    int64_t issued;             /* requests made due so far: indexes [0, issued) */
    int64_t head;               /* queue: [head, issued) are due and not yet sent */
    int64_t sent, completed, ok_responses, lost, waited, max_queue, reconnects;
    int64_t last_send, next_sweep;
    int64_t errors[E_KINDS];
    struct hist latency, service, sched_lag;
};

static int64_t due_at(const struct run *r, int64_t i)
{
    return r->start + llround((double)i * 1e9 / r->cfg->rate);
}

/* Ask epoll for what the connection waits for; a syscall only when that changes. */
static void arm_events(struct run *r, int index)
{
    struct conn *c = &r->conns[index];
    uint32_t want = EPOLLIN | EPOLLRDHUP;
    if (c->state == C_CONNECTING || (c->state == C_BUSY && c->wrote < r->cfg->request_len))
        want |= EPOLLOUT;
    if (want == c->events)
        return;
    struct epoll_event ev = {.events = want, .data.u32 = (uint32_t)index};
    epoll_ctl(r->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = want;
}

/*
 * Idle connections are used in turn (a FIFO), so every connection of the pool
 * carries its share of the requests, as that many clients would, and none
 * sits idle long enough to meet a server's idle timeout.
 */
static void push_idle(struct run *r, int index)
{
    int n = r->cfg->connections;
    r->conns[index].state = C_IDLE;
    r->idle[(r->idle_head + r->n_idle++) % n] = index;
}

static int pop_idle(struct run *r)
{
    int index = r->idle[r->idle_head];
    r->idle_head = (r->idle_head + 1) % r->cfg->connections;
    r->n_idle--;
    return index;
}

/* Rare (an idle connection failed): close the gap, keeping the order. */
static void drop_idle(struct run *r, int index)
{
    int n = r->cfg->connections, kept = 0;
    for (int k = 0; k < r->n_idle; k++) {
        int other = r->idle[(r->idle_head + k) % n];
        if (other != index)
            r->idle[(r->idle_head + kept++) % n] = other;
    }
    r->n_idle = kept;
}

static void conn_retry_later(struct run *r, int index, int64_t now)
{
    r->errors[E_CONNECT]++;
    r->conns[index].state = C_DOWN;
    r->conns[index].since = now + RECONNECT_DELAY_NS;
}

/* Start a non-blocking connect; a failure (now or when it completes) is retried after a delay. */
static void conn_open(struct run *r, int index, int64_t now)
{
    struct conn *c = &r->conns[index];
    rp_reset(&c->parser);
    c->fd = socket(r->cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_retry_later(r, index, now);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)&r->cfg->addr, r->cfg->addr_len) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        conn_retry_later(r, index, now);
        return;
    }
    c->state = C_CONNECTING;
    c->since = now;
    c->events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    struct epoll_event ev = {.events = c->events, .data.u32 = (uint32_t)index};
    epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_close(struct run *r, int index)
{
    struct conn *c = &r->conns[index];
    if (c->state == C_IDLE)
        drop_idle(r, index);
    if (c->fd >= 0) {
        epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = C_DOWN;
}

/* An established connection failed (its request, if any, is lost as ``kind``): open a new one. */
static void conn_fail(struct run *r, int index, enum err_kind kind, int64_t now)
{
    if (r->conns[index].state == C_BUSY)
        r->lost++;
    r->errors[kind]++;
    conn_close(r, index);
    r->reconnects++;
    conn_open(r, index, now);
}

/* A connect failed or hung: try again after a delay, so a refusing server is not hammered. */
static void connect_failed(struct run *r, int index, int64_t now)
{
    conn_close(r, index);
    conn_retry_later(r, index, now);
}

static void conn_write(struct run *r, int index, int64_t now)
{
    struct conn *c = &r->conns[index];
    size_t len = r->cfg->request_len;
    while (c->wrote < len) {
        ssize_t n = send(c->fd, r->cfg->request + c->wrote, len - c->wrote, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            conn_fail(r, index, E_READ, now);
            return;
        }
        c->wrote += (size_t)n;
    }
    arm_events(r, index);
}

/* Send queued requests, oldest first, on idle connections. */
static void dispatch(struct run *r)
{
    while (r->head < r->issued && r->n_idle > 0) {
        int index = pop_idle(r);
        struct conn *c = &r->conns[index];
        c->state = C_BUSY;
        c->intended = due_at(r, r->head++);
        c->sent = now_ns();
        c->wrote = 0;
        rp_reset(&c->parser);
        r->sent++;
        r->last_send = c->sent;
        conn_write(r, index, c->sent);
    }
}

/* Make every request whose time has come due: it goes out at once or waits in the queue. */
static void issue(struct run *r, int64_t now)
{
    while (r->issued < r->total) {
        int64_t due = due_at(r, r->issued);
        if (due > now)
            break;
        hist_record(&r->sched_lag, now - due);
        r->issued++;
        dispatch(r);
        if (r->head < r->issued) {
            r->waited++;
            if (r->issued - r->head > r->max_queue)
                r->max_queue = r->issued - r->head;
        }
    }
}

/* Timeouts (queued or in flight, counted from the due time), connects that hang, reconnect delays. */
static void sweep(struct run *r, int64_t now)
{
    while (r->head < r->issued && due_at(r, r->head) + r->timeout_ns <= now) {
        r->head++;
        r->errors[E_TIMEOUT]++;
        r->lost++;
    }
    for (int i = 0; i < r->cfg->connections; i++) {
        struct conn *c = &r->conns[i];
        if (c->state == C_BUSY && c->intended + r->timeout_ns <= now) {
            conn_fail(r, i, E_TIMEOUT, now);
        } else if (c->state == C_CONNECTING && c->since + r->timeout_ns <= now) {
            connect_failed(r, i, now);
        } else if (c->state == C_DOWN && c->since <= now) {
            conn_open(r, i, now);
        }
    }
}

static void complete(struct run *r, int index, int64_t now)
{
    struct conn *c = &r->conns[index];
    r->completed++;
    hist_record(&r->latency, now - c->intended);
    hist_record(&r->service, now - c->sent);
    if (c->parser.status >= 200 && c->parser.status < 300)
        r->ok_responses++;
    else
        r->errors[E_STATUS]++;
    c->state = C_IDLE;
}

static void on_readable(struct run *r, int index)
{
    static char buf[65536];
    struct conn *c = &r->conns[index];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    int64_t now = now_ns();
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        conn_fail(r, index, E_READ, now);
        return;
    }
    if (c->state != C_BUSY) {           /* bytes nobody asked for */
        conn_fail(r, index, E_PARSE, now);
        return;
    }
    size_t used;
    enum rp_result res = rp_feed(&c->parser, buf, (size_t)n, &used);
    if (res == RP_ERROR) {
        conn_fail(r, index, E_PARSE, now);
    } else if (res == RP_DONE) {
        complete(r, index, now);
        if (used < (size_t)n)
            conn_fail(r, index, E_PARSE, now);
        else if (c->parser.close)
            conn_fail(r, index, E_READ, now);
        else
            push_idle(r, index);
    }
}

static void on_event(struct run *r, int index, uint32_t events)
{
    struct conn *c = &r->conns[index];
    int64_t now = now_ns();
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            connect_failed(r, index, now);
        } else if (events & EPOLLOUT) {
            push_idle(r, index);
            arm_events(r, index);
        }
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
        on_readable(r, index);
        if (c->state != C_BUSY)
            return;
    }
    if ((events & EPOLLOUT) && c->state == C_BUSY && c->wrote < r->cfg->request_len)
        conn_write(r, index, now);
}

static int64_t busy_count(const struct run *r)
{
    int64_t n = 0;
    for (int i = 0; i < r->cfg->connections; i++)
        n += r->conns[i].state == C_BUSY;
    return n;
}

static void arm_timer(struct run *r, int64_t at)
{
    struct itimerspec its = {0};
    if (at < 1)
        at = 1;
    its.it_value.tv_sec = at / NS_PER_S;
    its.it_value.tv_nsec = at % NS_PER_S;
    timerfd_settime(r->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Open the whole pool; '' or why not. */
static const char *open_pool(struct run *r, char *why, size_t why_len)
{
    int64_t now = now_ns();
    for (int i = 0; i < r->cfg->connections; i++)
        conn_open(r, i, now);
    int64_t deadline = now + CONNECT_WAIT_NS;
    struct epoll_event evs[256];
    while (r->n_idle < r->cfg->connections && r->errors[E_CONNECT] == 0) {
        int64_t left = deadline - now_ns();
        if (left <= 0)
            break;
        int n = epoll_wait(r->epfd, evs, 256, (int)(left / NS_PER_MS) + 1);
        for (int k = 0; k < n; k++) {
            int index = (int)evs[k].data.u32;
            if (r->conns[index].state != C_CONNECTING)
                continue;
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(r->conns[index].fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                r->errors[E_CONNECT]++;
                snprintf(why, why_len, "%s", strerror(err));
            } else if (evs[k].events & EPOLLOUT) {
                push_idle(r, index);
                arm_events(r, index);
            }
        }
    }
    if (r->n_idle == r->cfg->connections)
        return NULL;
    if (r->errors[E_CONNECT] == 0)
        snprintf(why, why_len, "connect timed out");
    return why;
}

static void loop(struct run *r)
{
    struct epoll_event evs[256];
    r->next_sweep = r->start + SWEEP_NS;
    for (;;) {
        int64_t now = now_ns();
        issue(r, now);
        if (now >= r->next_sweep) {
            sweep(r, now);
            dispatch(r);
            r->next_sweep = now + SWEEP_NS;
        }
        if (r->issued == r->total && r->head == r->issued && busy_count(r) == 0)
            return;
        int64_t next = r->next_sweep;
        if (r->issued < r->total && due_at(r, r->issued) < next)
            next = due_at(r, r->issued);
        arm_timer(r, next);
        int n = epoll_wait(r->epfd, evs, 256, -1);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 == UINT32_MAX) {
                uint64_t expirations;
                ssize_t got = read(r->tfd, &expirations, sizeof expirations);
                (void)got;
                continue;
            }
            on_event(r, (int)evs[k].data.u32, evs[k].events);
        }
        dispatch(r);
    }
}

/* ---- output ---------------------------------------------------------------------------- */

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_hist(const char *name, const struct hist *h)
{
    static const double PS[] = {50, 90, 99, 99.9};
    static const char *const NAMES[] = {"p50", "p90", "p99", "p99.9"};
    printf("\"%s\": {\"count\": %llu", name, (unsigned long long)h->n);
    if (h->n) {
        for (int i = 0; i < 4; i++)
            printf(", \"%s\": %.3f", NAMES[i], (double)hist_percentile(h, PS[i]) / 1e3);
        printf(", \"max\": %.3f, \"min\": %.3f, \"mean\": %.3f",
               (double)h->max / 1e3, (double)h->min / 1e3, h->sum / (double)h->n / 1e3);
    }
    printf("}");
}

static void print_result(const struct run *r, const char *failure)
{
    const struct config *cfg = r->cfg;
    double interval = 1.0 / cfg->rate;
    double window = r->sent ? (double)(r->last_send - r->start) / 1e9 + interval : 0.0;
    char reason[512] = "";
    if (failure) {
        snprintf(reason, sizeof reason, "%s", failure);
    } else {
        size_t used = 0;
        for (int k = 0; k < E_KINDS; k++) {
            if (r->errors[k] && used < sizeof reason)
                used += (size_t)snprintf(reason + used, sizeof reason - used, "%s%s %lld",
                                         used ? ", " : "errors: ", ERR_NAMES[k], (long long)r->errors[k]);
        }
        if (!used && r->ok_responses == 0)
            snprintf(reason, sizeof reason, "no request completed");
    }
    printf("{\"generator\": \"openloop.c\", \"ok\": %s, \"failure\": ", reason[0] ? "false" : "true");
    json_string(reason);
    printf(", \"url\": ");
    json_string(cfg->url);
    printf(", \"target_rps\": %.6g, \"duration_s\": %.6g, \"connections\": %d, \"timeout_s\": %.6g",
           cfg->rate, cfg->duration_s, cfg->connections, cfg->timeout_s);
    printf(", \"scheduled\": %lld, \"sent\": %lld, \"completed\": %lld, \"ok_responses\": %lld, \"lost\": %lld",
           (long long)r->total, (long long)r->sent, (long long)r->completed, (long long)r->ok_responses,
           (long long)r->lost);
    printf(", \"errors\": {");
    for (int k = 0; k < E_KINDS; k++)
        printf("%s\"%s\": %lld", k ? ", " : "", ERR_NAMES[k], (long long)r->errors[k]);
    printf("}, \"window_s\": %.6f, \"sent_rps\": %.3f, \"achieved_rps\": %.3f",
           window, window > 0 ? (double)r->sent / window : 0.0,
           window > 0 ? (double)r->ok_responses / window : 0.0);
    printf(", ");
    print_hist("latency_us", &r->latency);
    printf(", ");
    print_hist("service_us", &r->service);
    printf(", ");
    print_hist("sched_lag_us", &r->sched_lag);
    printf(", \"waited_for_connection\": %lld, \"max_queue\": %lld, \"reconnects\": %lld",
           (long long)r->waited, (long long)r->max_queue, (long long)r->reconnects);
    printf(", \"histogram\": {\"unit\": \"ns\", \"sub_buckets\": %d, \"max_relative_error\": %.5f}}\n",
           H_SUB, 1.0 / H_SUB);
    fflush(stdout);
}

/* ---- command line ------------------------------------------------------------------------ */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: openloop --rate R --duration S [--connections N] [--timeout S] [-H 'Name: value']... URL\n"
            "       openloop --self-test\n"
            "Open-loop HTTP/1.1 GETs at R requests/s for S seconds over N keep-alive connections\n"
            "(default 50); latency from each request's intended send time; one JSON object on stdout.\n");
}

static bool parse_number(const char *text, double low, double high, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= low && v <= high))
        return false;
    *out = v;
    return true;
}

/* http://host[:port][/path]: resolve the address and build the request. */
static bool build_target(struct config *cfg, char **headers, int n_headers)
{
    const char *u = cfg->url;
    if (strncmp(u, "http://", 7) != 0) {
        fprintf(stderr, "openloop: only http:// URLs: %s\n", u);
        return false;
    }
    const char *auth = u + 7, *slash = strchr(auth, '/');
    size_t auth_len = slash ? (size_t)(slash - auth) : strlen(auth);
    const char *path = slash ? slash : "/";
    char authority[256], host[256], port[16] = "80";
    if (auth_len == 0 || auth_len >= sizeof authority) {
        fprintf(stderr, "openloop: bad host in %s\n", u);
        return false;
    }
    memcpy(authority, auth, auth_len);
    authority[auth_len] = 0;
    const char *colon = strrchr(authority, ':');
    const char *bracket = strchr(authority, ']');
    size_t host_len = (colon && (!bracket || colon > bracket)) ? (size_t)(colon - authority) : auth_len;
    if (host_len < auth_len)
        snprintf(port, sizeof port, "%s", authority + host_len + 1);
    if (authority[0] == '[' && host_len >= 2 && authority[host_len - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(host_len - 2), authority + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)host_len, authority);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "openloop: cannot resolve %s port %s: %s\n", host, port, gai_strerror(rc));
        return false;
    }
    memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
    cfg->addr_len = res->ai_addrlen;
    freeaddrinfo(res);

    bool own_host = false;
    size_t size = strlen(path) + auth_len + 64;
    for (int i = 0; i < n_headers; i++) {
        const char *h = headers[i], *c = strchr(h, ':');
        if (c == NULL || c == h || strpbrk(h, "\r\n")) {
            fprintf(stderr, "openloop: bad header %s (want 'Name: value')\n", h);
            return false;
        }
        for (const char *s = h; s < c; s++) {
            if (!is_tchar((unsigned char)*s)) {
                fprintf(stderr, "openloop: bad header name in %s\n", h);
                return false;
            }
        }
        own_host |= token_eq(h, (size_t)(c - h), "host");
        size += strlen(h) + 2;
    }
    cfg->request = malloc(size);
    int len = snprintf(cfg->request, size, "GET %s HTTP/1.1\r\n", path);
    if (!own_host)
        len += snprintf(cfg->request + len, size - (size_t)len, "Host: %s\r\n", authority);
    for (int i = 0; i < n_headers; i++)
        len += snprintf(cfg->request + len, size - (size_t)len, "%s\r\n", headers[i]);
    len += snprintf(cfg->request + len, size - (size_t)len, "\r\n");
    cfg->request_len = (size_t)len;
    return true;
}

static int self_test(void);

int main(int argc, char **argv)
{
    static const struct option OPTS[] = {
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"connections", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"header", required_argument, NULL, 'H'},
        {"self-test", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct config cfg = {.rate = 0, .duration_s = 0, .timeout_s = 2.0, .connections = 50};
    char **headers = calloc((size_t)argc, sizeof *headers);
    int n_headers = 0, opt;
    double conns = 50;
    while ((opt = getopt_long(argc, argv, "r:d:c:t:H:h", OPTS, NULL)) != -1) {
        bool ok = true;
        switch (opt) {
        case 'r': ok = parse_number(optarg, 1e-3, 1e6, &cfg.rate); break;
        case 'd': ok = parse_number(optarg, 1e-3, 86400, &cfg.duration_s); break;
        case 'c': ok = parse_number(optarg, 1, 10000, &conns) && conns == floor(conns); break;
        case 't': ok = parse_number(optarg, 1e-3, 3600, &cfg.timeout_s); break;
        case 'H': headers[n_headers++] = optarg; break;
        case 'S': free(headers); return self_test();
        case 'h': free(headers); usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, "openloop: bad value: %s\n", optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || cfg.rate <= 0 || cfg.duration_s <= 0) {
        usage(stderr);
        return 2;
    }
    cfg.url = argv[optind];
    cfg.connections = (int)conns;
    if (!build_target(&cfg, headers, n_headers))
        return 2;

    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);     /* wake at the due time, not up to 50 us after it */
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }

    static struct run run;
    struct run *r = &run;
    r->cfg = &cfg;
    r->timeout_ns = llround(cfg.timeout_s * 1e9);
    r->total = llround(cfg.rate * cfg.duration_s);
    if (r->total < 1)
        r->total = 1;
    r->conns = calloc((size_t)cfg.connections, sizeof *r->conns);
    r->idle = calloc((size_t)cfg.connections, sizeof *r->idle);
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!r->conns || !r->idle || r->epfd < 0 || r->tfd < 0) {
        perror("openloop: setup");
        return 1;
    }
    for (int i = 0; i < cfg.connections; i++)
        r->conns[i].fd = -1;
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->tfd, &tev);

    char why[256];
    const char *pool_failure = open_pool(r, why, sizeof why);
    if (pool_failure) {
        char failure[320];
        snprintf(failure, sizeof failure, "%d of %d connections not open before the start: %s",
                 cfg.connections - r->n_idle, cfg.connections, pool_failure);
        r->lost = r->total;
        print_result(r, failure);
    } else {
        r->start = now_ns() + START_LEAD_NS;
        r->last_send = r->start;
        loop(r);
        print_result(r, NULL);
    }
    for (int i = 0; i < cfg.connections; i++)
        if (r->conns[i].fd >= 0)
            close(r->conns[i].fd);
    free(r->conns);
    free(r->idle);
    free(cfg.request);
    free(headers);
    return 0;
}

/* ---- self-test: the histogram and the parser, run by tests/benchmarks ------------------------ */

static int checks, failures;

static void expect(bool ok, const char *what, long long a, long long b)
{
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "self-test FAILED: %s (%lld vs %lld)\n", what, a, b);
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_histogram(void)
{
    /* Every value lies in its bucket, whose highest value is at most 1/128 above it. */
    for (int64_t v = 0; v < 2000000; v += (v < 100000 ? 1 : 997)) {
        int i = hist_index(v);
        int64_t high = hist_bucket_high(i);
        int64_t low = i ? hist_bucket_high(i - 1) + 1 : 0;
        expect(low <= v && v <= high, "value inside its bucket", v, high);
        expect((double)(high - v) <= (double)v / H_SUB, "bucket width within 1/128", v, high);
    }
    for (int m = 8; m < H_TOP_BITS; m++) {
        int64_t v = 1LL << m;
        expect(hist_index(v) == hist_index(v - 1) + 1, "buckets are contiguous at powers of two", v, m);
    }
    expect(hist_index(1LL << 50) == H_BUCKETS - 1, "huge values clamp to the top bucket", hist_index(1LL << 50),
           H_BUCKETS - 1);

    static struct hist h;
    memset(&h, 0, sizeof h);
    expect(hist_percentile(&h, 99) == 0, "empty histogram", hist_percentile(&h, 99), 0);
    hist_record(&h, 123456);
    expect(hist_percentile(&h, 50) == 123456 && hist_percentile(&h, 99.9) == 123456, "one sample is every percentile",
           hist_percentile(&h, 50), 123456);
    hist_record(&h, -5);
    expect(h.min == 0, "negative values count as 0", h.min, 0);

    /* 1..100000 us: nearest-rank percentiles are exact values we know. */
    memset(&h, 0, sizeof h);
    for (int64_t us = 1; us <= 100000; us++)
        hist_record(&h, us * 1000);
    const double ps[] = {50, 90, 99, 99.9, 100};
    const int64_t want[] = {50000000, 90000000, 99000000, 99900000, 100000000};
    for (int k = 0; k < 5; k++) {
        int64_t got = hist_percentile(&h, ps[k]);
        expect(got >= want[k] && (double)(got - want[k]) <= 0.01 * (double)want[k], "uniform percentile within 1%",
               got, want[k]);
    }
    expect(h.max == 100000000 && h.n == 100000, "max and count exact", h.max, 100000000);

    /* Log-uniform random samples (1 us .. 10 s) against sorted exact nearest ranks. */
    enum { N = 200000 };
    static int64_t values[N];
    memset(&h, 0, sizeof h);
    for (int i = 0; i < N; i++) {
        double u = (double)(rng() >> 11) / 9007199254740992.0;
        values[i] = (int64_t)(1000.0 * pow(10.0, 7.0 * u));
        hist_record(&h, values[i]);
    }
    qsort(values, N, sizeof values[0], cmp_i64);
    const double rps[] = {1, 10, 50, 90, 99, 99.9, 99.99};
    for (int k = 0; k < 7; k++) {
        int64_t rank = (int64_t)ceil(rps[k] / 100.0 * N - 1e-9);
        int64_t exact = values[rank - 1], got = hist_percentile(&h, rps[k]);
        expect(got >= exact && (double)(got - exact) <= 0.01 * (double)exact, "random percentile within 1%", got,
               exact);
    }
    expect(hist_percentile(&h, 100) == values[N - 1], "p100 is the exact max", hist_percentile(&h, 100),
           values[N - 1]);
}

struct parse_case {
    const char *name;
    const char *bytes;
    enum rp_result want;
    int status;                 /* for RP_DONE */
    bool close;
};

static const struct parse_case PARSE_CASES[] = {
    {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", RP_DONE, 200, false},
    {"zero length", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", RP_DONE, 200, false},
    {"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", RP_DONE, 200, false},
    {"empty reason phrase", "HTTP/1.1 503 \r\ncontent-length: 1\r\n\r\nx", RP_DONE, 503, false},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nA;x=y\r\n0123456789\r\n0\r\n\r\n",
     RP_DONE, 200, false},
    {"chunked with trailers", "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n1\r\na\r\n0\r\nX-T: 1\r\n\r\n",
     RP_DONE, 200, false},
    {"interim 100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", RP_DONE, 204, false},
    {"304 has no body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", RP_DONE, 304, false},
    {"connection close", "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx", RP_DONE,
     200, true},
    {"same length twice", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", RP_DONE, 200, false},
    {"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", RP_ERROR, 0, false},
    {"garbage", "hello world\r\n\r\n", RP_ERROR, 0, false},
    {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx", RP_ERROR, 0, false},
    {"bare CR", "HTTP/1.1 200 OK\rContent-Length: 1\r\n\r\nx", RP_ERROR, 0, false},
    {"no framing", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody", RP_ERROR, 0, false},
    {"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     RP_ERROR, 0, false},
    {"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", RP_ERROR, 0, false},
    {"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", RP_ERROR, 0, false},
    {"length list", "HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx", RP_ERROR, 0, false},
    {"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", RP_ERROR, 0,
     false},
    {"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", RP_ERROR, 0, false},
    {"space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx", RP_ERROR, 0, false},
    {"obs-fold", "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 1\r\n\r\nx", RP_ERROR, 0, false},
    {"two-digit status", "HTTP/1.1 20 OK\r\nContent-Length: 1\r\n\r\nx", RP_ERROR, 0, false},
    {"101 not asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", RP_ERROR, 0, false},
    {"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", RP_ERROR, 0, false},
    {"chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", RP_ERROR, 0,
     false},
    {"empty chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", RP_ERROR, 0, false},
};

static enum rp_result feed_split(struct rparser *p, const char *s, size_t len, size_t cut, size_t *used)
{
    size_t u1 = 0, u2 = 0;
    rp_reset(p);
    enum rp_result r = rp_feed(p, s, cut, &u1);
    if (r != RP_NEED_MORE || cut == len) {
        *used = u1;
        return r;
    }
    r = rp_feed(p, s + cut, len - cut, &u2);
    *used = u1 + u2;
    return r;
}

static void test_parser(void)
{
    static struct rparser p;
    static char with_tail[MAX_HEAD];
    for (size_t k = 0; k < sizeof PARSE_CASES / sizeof PARSE_CASES[0]; k++) {
        const struct parse_case *c = &PARSE_CASES[k];
        size_t len = strlen(c->bytes), used;
        /* Whole, and split at every point into two reads. */
        for (size_t cut = 0; cut <= len; cut++) {
            enum rp_result r = feed_split(&p, c->bytes, len, cut, &used);
            expect(r == c->want, c->name, r, c->want);
            if (c->want == RP_DONE && r == RP_DONE) {
                expect(used == len, c->name, (long long)used, (long long)len);
                expect(p.status == c->status && p.close == c->close, c->name, p.status, c->status);
            }
        }
        /* One byte at a time: NEED_MORE until the very last byte decides. */
        rp_reset(&p);
        enum rp_result r = RP_NEED_MORE;
        size_t at = 0;
        while (at < len && r == RP_NEED_MORE) {
            r = rp_feed(&p, c->bytes + at, 1, &used);
            at += used ? used : 1;
        }
        expect(r == c->want, c->name, r, c->want);
        if (c->want == RP_DONE)
            expect(at == len, "a response ends at its last byte", (long long)at, (long long)len);
        /* With the next response's bytes behind it, a complete one ends where it ends. */
        if (c->want == RP_DONE) {
            snprintf(with_tail, sizeof with_tail, "%sHTTP/1.1 200 OK\r\n", c->bytes);
            rp_reset(&p);
            r = rp_feed(&p, with_tail, strlen(with_tail), &used);
            expect(r == RP_DONE && used == len, "trailing bytes are left over", (long long)used, (long long)len);
        }
        /* Every strict prefix of a good response needs more. */
        if (c->want == RP_DONE) {
            for (size_t cut = 0; cut < len; cut++) {
                rp_reset(&p);
                r = rp_feed(&p, c->bytes, cut, &used);
                expect(r == RP_NEED_MORE, "a prefix needs more", r, RP_NEED_MORE);
            }
        }
    }
    /* A head beyond the limit is an error, not a wait forever. */
    rp_reset(&p);
    static char big[MAX_HEAD + 64];
    int n = snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + n, 'a', sizeof big - (size_t)n);
    size_t used;
    expect(rp_feed(&p, big, sizeof big, &used) == RP_ERROR, "head too large", 0, 0);
}

static int self_test(void)
{
    test_histogram();
    test_parser();
    printf("{\"self_test\": \"%s\", \"checks\": %d, \"failures\": %d}\n", failures ? "failed" : "ok", checks,
           failures);
    return failures ? 1 : 0;
}
