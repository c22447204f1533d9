/* handshake: full TLS handshakes per second against one listener.
 *
 * Keeps -c connections busy for -d seconds. Each connection: TCP connect, a
 * full TLS 1.3 handshake (no session resumption; with -r, every connection
 * offers the ticket of the first one that got one, as meshproxy's client
 * does between proxies), one small HTTP/1.1
 * request with "Connection: close", read until the server closes, then the
 * next connection. The request makes the server finish its side of the
 * handshake (in TLS 1.3 the client is done first) and makes every server do
 * the same work: terminate TLS, forward one request, answer.
 *
 * The client does not verify the server (it would only add client-side CPU:
 * the server is what is measured) and sends no certificate unless -cert is
 * given. Output: one JSON object on stdout.
 *
 * Build: cc -O2 -o handshake handshake.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { S_CONNECTING, S_HANDSHAKE, S_WRITE, S_READ };

struct conn {
    int fd;
    int state;
    SSL *ssl;
    size_t sent;
    size_t got;
    int status_ok;
};

static SSL_CTX *ctx;
static struct sockaddr_in addr;
static const char *sni;
static char request[512];
static size_t request_len;
static int ep;
static long done_ok, err_connect, err_tls, err_io, err_status, resumed;
static int resume;
static SSL_SESSION *saved; /* -r: the ticket every new connection offers */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void arm(struct conn *c, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) != 0) {
        perror("epoll_ctl");
        exit(2);
    }
}

static void start(struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(2);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->ssl = NULL;
    c->sent = c->got = 0;
    c->status_ok = 0;
    c->state = S_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        err_connect++;
        close(c->fd);
        c->fd = -1;
        return;
    }
    arm(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void finish(struct conn *c, long *counter) {
    if (counter) (*counter)++;
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
}

/* Drive one connection as far as it can go; returns when it must wait. */
static void step(struct conn *c) {
    for (;;) {
        int rc, e;
        switch (c->state) {
        case S_CONNECTING: {
            int soerr = 0;
            socklen_t len = sizeof soerr;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            if (soerr) {
                finish(c, &err_connect);
                return;
            }
            c->ssl = SSL_new(ctx);
            SSL_set_fd(c->ssl, c->fd);
            if (sni) SSL_set_tlsext_host_name(c->ssl, sni);
            if (saved) SSL_set_session(c->ssl, saved);
            c->state = S_HANDSHAKE;
            break;
        }
        case S_HANDSHAKE:
            rc = SSL_connect(c->ssl);
            if (rc == 1) {
                if (SSL_session_reused(c->ssl)) resumed++;
                c->state = S_WRITE;
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ) { arm(c, EPOLLIN, EPOLL_CTL_MOD); return; }
            if (e == SSL_ERROR_WANT_WRITE) { arm(c, EPOLLOUT, EPOLL_CTL_MOD); return; }
            finish(c, &err_tls);
            ERR_clear_error();
            return;
        case S_WRITE:
            rc = SSL_write(c->ssl, request + c->sent, (int)(request_len - c->sent));
            if (rc > 0) {
                c->sent += (size_t)rc;
                if (c->sent == request_len) c->state = S_READ;
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ) { arm(c, EPOLLIN, EPOLL_CTL_MOD); return; }
            if (e == SSL_ERROR_WANT_WRITE) { arm(c, EPOLLOUT, EPOLL_CTL_MOD); return; }
            finish(c, &err_io);
            ERR_clear_error();
            return;
        case S_READ: {
            char buf[4096];
            rc = SSL_read(c->ssl, buf, sizeof buf);
            if (rc > 0) {
                if (c->got == 0 && rc >= 12)
                    c->status_ok = memcmp(buf, "HTTP/1.1 2", 10) == 0 || memcmp(buf, "HTTP/1.0 2", 10) == 0;
                c->got += (size_t)rc;
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ) { arm(c, EPOLLIN, EPOLL_CTL_MOD); return; }
            if (e == SSL_ERROR_WANT_WRITE) { arm(c, EPOLLOUT, EPOLL_CTL_MOD); return; }
            /* The server closed (close_notify or EOF): the exchange is over. */
            ERR_clear_error();
            if (resume && !saved && c->got > 0) {
                /* The ticket came before the answer. A copy: freeing a connection that
                 * was not shut down marks its own session unresumable. */
                SSL_SESSION *s = SSL_get_session(c->ssl);
                if (s && SSL_SESSION_is_resumable(s)) saved = SSL_SESSION_dup(s);
            }
            if (c->got == 0) finish(c, &err_io);
            else if (!c->status_ok) finish(c, &err_status);
            else finish(c, &done_ok);
            return;
        }
        }
    }
}

static void usage(void) {
    fprintf(stderr, "usage: handshake -a IP -p PORT [-c CONC] [-d SECONDS] [-s SNI] [-H HOST] [-cert PEM] [-r 1]\n");
    exit(64);
}

int main(int argc, char **argv) {
    const char *ip = "127.0.0.1", *host = "localhost", *cert = NULL;
    int port = 0, conc = 20;
    double duration = 5.0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (!strcmp(argv[i], "-a")) ip = argv[++i];
        else if (!strcmp(argv[i], "-p")) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c")) conc = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-d")) duration = atof(argv[++i]);
        else if (!strcmp(argv[i], "-s")) sni = argv[++i];
        else if (!strcmp(argv[i], "-H")) host = argv[++i];
        else if (!strcmp(argv[i], "-cert")) cert = argv[++i];
        else if (!strcmp(argv[i], "-r")) resume = atoi(argv[++i]);
        else usage();
    }
    /* A server that resets a connection mid-write must cost that connection (counted as an error),
     * not the whole run: without this, the write's SIGPIPE kills the tool. */
    signal(SIGPIPE, SIG_IGN);
    if (port <= 0 || conc <= 0 || conc > 10000 || duration <= 0) usage();
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1) usage();
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* No session cache; without -r no tickets either: every handshake is a full one. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!resume) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                 SSL_CTX_use_PrivateKey_file(ctx, cert, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "cannot load %s\n", cert);
        return 66;
    }
    ep = epoll_create1(0);
    struct conn *conns = calloc((size_t)conc, sizeof *conns);
    for (int i = 0; i < conc; i++) start(&conns[i]);
    double t0 = now(), end = t0 + duration;
    struct epoll_event events[256];
    while (now() < end) {
        int n = epoll_wait(ep, events, 256, 50);
        for (int i = 0; i < n; i++) step((struct conn *)events[i].data.ptr);
        for (int i = 0; i < conc; i++)
            if (conns[i].fd < 0) start(&conns[i]);
    }
    double elapsed = now() - t0;
    printf("{\"connections\": %d, \"seconds\": %.3f, \"handshakes\": %ld, \"per_second\": %.1f, "
           "\"resumed\": %ld, \"errors\": {\"connect\": %ld, \"tls\": %ld, \"io\": %ld, \"status\": %ld}}\n",
           conc, elapsed, done_ok, done_ok / elapsed, resumed, err_connect, err_tls, err_io, err_status);
    return 0;
}
