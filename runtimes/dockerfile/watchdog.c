/*
 * faaso watchdog: serves HTTP on $PORT and runs a command-line program once per request, the
 * model of OpenFaaS's classic watchdog. The request body is the program's standard input; what
 * it writes to standard output is the response body.
 *
 *   fprocess             the command, run with /bin/sh -c (required)
 *   content_type         Content-Type of the answers (text/plain; charset=utf-8)
 *   PORT                 8080
 *   FAASO_MAX_BODY       largest request body in bytes (64 MiB): a larger one is a 413
 *   FAASO_EXEC_TIMEOUT   seconds one run may take (60): then it is killed and the answer is 504
 *   FAASO_SHUTDOWN_GRACE seconds in-flight requests get after SIGTERM/SIGINT (9)
 *
 * Exit status 0 is a 200 with the program's standard output. Any other status is a 500 whose
 * body is the program's standard error (or "exit status N"). Standard error always goes on to
 * the container's log. The program sees the request in its environment: Http_Method, Http_Path,
 * Http_Query, and every header as Http_<Name> with '-' turned into '_' (Http_Content_Type).
 * GET /_/health answers 200 {"status":"ok"} without running anything.
 *
 * One process per connection (HTTP/1.1 keep-alive, Content-Length or chunked bodies,
 * Expect: 100-continue); the program's input and output are memory files, so a program may read
 * and write any amount in any order without deadlock, and a read-only root file system is fine.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 65536
#define MAX_HEADERS 128
#define IDLE_TIMEOUT_MS 75000 /* keep-alive, as faaso's other runtimes */
#define READ_TIMEOUT_MS 60000 /* a request that stalls this long mid-way is dropped */
#define HEALTH_PATH "/_/health"

static const char *fprocess;
static const char *content_type = "text/plain; charset=utf-8";
static long long max_body = 64LL * 1024 * 1024;
static double exec_timeout = 60;
static double grace = 9;
static volatile sig_atomic_t stopping;
static volatile sig_atomic_t child_exited;
#define MAX_KIDS 4096
static pid_t kids[MAX_KIDS]; /* connection processes, told to stop on shutdown */

static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("faaso watchdog: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static double env_number(const char *name, double fallback) {
    const char *raw = getenv(name);
    if (!raw || !*raw) return fallback;
    char *end;
    double value = strtod(raw, &end);
    if (*end || !(value > 0)) {
        say("%s=%s must be a positive number", name, raw);
        exit(2);
    }
    return value;
}

static void on_stop(int sig) { (void)sig; stopping = 1; }
static void on_child(int sig) { (void)sig; child_exited = 1; }

/* ---------------------------------------------------------------- connection input */

typedef struct {
    int fd;
    char buf[HEAD_MAX];
    size_t len; /* bytes held */
    size_t pos; /* bytes consumed */
} Conn;

/* Wait for input and read some; 1 read, 0 end of stream, -1 error, timeout or stop when idle. */
static int fill(Conn *c, int timeout_ms, int idle) {
    if (c->pos > 0) {
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    if (c->len == sizeof c->buf) return -1;
    sigset_t open_mask;
    sigemptyset(&open_mask);
    for (;;) {
        if (idle && stopping) return -1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        struct timespec ts = {timeout_ms / 1000, (timeout_ms % 1000) * 1000000L};
        int n = ppoll(&p, 1, &ts, &open_mask);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        ssize_t got = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) return 0;
        c->len += (size_t)got;
        return 1;
    }
}

static int write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size > 0) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Copy `size` body bytes of the connection into fd `out` (a memory file). */
static int copy_body(Conn *c, int out, long long size) {
    while (size > 0) {
        if (c->pos == c->len && fill(c, READ_TIMEOUT_MS, 0) <= 0) return -1;
        size_t take = c->len - c->pos;
        if ((long long)take > size) take = (size_t)size;
        if (write(out, c->buf + c->pos, take) != (ssize_t)take) return -1;
        c->pos += take;
        size -= (long long)take;
    }
    return 0;
}

/* One line (without CRLF) from the connection, for chunk sizes and trailers. */
static char *read_line(Conn *c) {
    for (;;) {
        char *start = c->buf + c->pos;
        char *nl = memchr(start, '\n', c->len - c->pos);
        if (nl) {
            *nl = '\0';
            if (nl > start && nl[-1] == '\r') nl[-1] = '\0';
            c->pos = (size_t)(nl - c->buf) + 1;
            return start;
        }
        if (fill(c, READ_TIMEOUT_MS, 0) <= 0) return NULL;
    }
}

/* ---------------------------------------------------------------- responses */

static int respond(int fd, int status, const char *type, int body_fd, const char *text,
                   int keep_alive, int head_only) {
    const char *reason = status == 200 ? "OK" : status == 400 ? "Bad Request"
                       : status == 404 ? "Not Found" : status == 413 ? "Payload Too Large"
                       : status == 431 ? "Request Header Fields Too Large"
                       : status == 500 ? "Internal Server Error" : status == 501 ? "Not Implemented"
                       : status == 504 ? "Gateway Timeout" : "Unknown";
    off_t size = body_fd >= 0 ? lseek(body_fd, 0, SEEK_END) : (off_t)strlen(text);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %lld\r\n"
                     "Connection: %s\r\n\r\n",
                     status, reason, type, (long long)size, keep_alive ? "keep-alive" : "close");
    if (write_all(fd, head, (size_t)n) < 0) return -1;
    if (head_only) return 0;
    if (body_fd < 0) return write_all(fd, text, (size_t)size);
    lseek(body_fd, 0, SEEK_SET);
    char chunk[65536];
    for (;;) {
        ssize_t got = read(body_fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return got < 0 ? -1 : 0;
        if (write_all(fd, chunk, (size_t)got) < 0) return -1;
    }
}

/* ---------------------------------------------------------------- running the program */

static void put_env(const char *name, const char *value) {
    char key[256];
    size_t i = 0;
    for (const char *p = name; *p && i < sizeof key - 1; p++)
        key[i++] = (*p == '-' || !isalnum((unsigned char)*p)) ? '_' : *p;
    key[i] = '\0';
    setenv(key, value, 1);
}

typedef struct {
    char *method, *path, *query;
    char *names[MAX_HEADERS], *values[MAX_HEADERS];
    int count;
} Request;

/* Run fprocess with stdin from `in`; fill `out` and `err`. Returns the HTTP status. */
static int run_program(const Request *req, int in, int out, int err) {
    sigset_t chld, wake, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old);
    wake = chld;
    sigaddset(&wake, SIGTERM);
    sigaddset(&wake, SIGINT);
    child_exited = 0;
    pid_t pid = fork();
    if (pid < 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        dprintf(err, "cannot start the function: %s\n", strerror(errno));
        return 500;
    }
    if (pid == 0) {
        setpgid(0, 0); /* its own group: a timeout kills everything it started */
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setenv("Http_Method", req->method, 1);
        setenv("Http_Path", req->path, 1);
        setenv("Http_Query", req->query ? req->query : "", 1);
        for (int i = 0; i < req->count; i++) {
            char name[256];
            snprintf(name, sizeof name, "Http_%s", req->names[i]);
            put_env(name, req->values[i]);
        }
        lseek(in, 0, SEEK_SET);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execl("/bin/sh", "sh", "-c", fprocess, (char *)NULL);
        dprintf(2, "cannot run /bin/sh: %s\n", strerror(errno));
        _exit(127);
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += (time_t)exec_timeout;
    deadline.tv_nsec += (long)((exec_timeout - (double)(time_t)exec_timeout) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    int status = 0;
    for (;;) {
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) break;
        struct timespec now, left;
        clock_gettime(CLOCK_MONOTONIC, &now);
        left.tv_sec = deadline.tv_sec - now.tv_sec;
        left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
        if (left.tv_nsec < 0) { left.tv_sec--; left.tv_nsec += 1000000000L; }
        if (left.tv_sec < 0) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            sigprocmask(SIG_SETMASK, &old, NULL);
            if (ftruncate(err, 0) == 0) lseek(err, 0, SEEK_SET);
            dprintf(err, "the function ran longer than %g s and was stopped\n", exec_timeout);
            say("%s %s: killed after %g s", req->method, req->path, exec_timeout);
            return 504;
        }
        /* SIGTERM meanwhile: finish this request, then close the connection. */
        int sig = sigtimedwait(&wake, NULL, &left);
        if (sig == SIGTERM || sig == SIGINT) stopping = 1;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    /* Standard error goes on to the container's log in every case. */
    off_t err_size = lseek(err, 0, SEEK_END);
    if (err_size > 0) {
        char chunk[65536];
        lseek(err, 0, SEEK_SET);
        ssize_t got;
        while ((got = read(err, chunk, sizeof chunk)) > 0) fwrite(chunk, 1, (size_t)got, stderr);
        fflush(stderr);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 200;
    if (err_size == 0) {
        if (WIFEXITED(status)) dprintf(err, "exit status %d\n", WEXITSTATUS(status));
        else dprintf(err, "killed by signal %d\n", WTERMSIG(status));
    }
    return 500;
}

/* ---------------------------------------------------------------- one connection */

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
    return s;
}

static int memfile(const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) say("memfd_create: %s", strerror(errno));
    return fd;
}

/* Serve one request; return 1 to keep the connection, 0 to close it. */
static int serve_one(Conn *c) {
    char *end;
    for (;;) {
        end = memmem(c->buf + c->pos, c->len - c->pos, "\r\n\r\n", 4);
        if (end) break;
        if (c->len - c->pos == 0 && c->pos > 0) { c->len = c->pos = 0; }
        int idle = c->len == c->pos;
        int got = fill(c, idle ? IDLE_TIMEOUT_MS : READ_TIMEOUT_MS, idle);
        if (got == 0 || (got < 0 && idle)) return 0;
        if (got < 0) {
            if (c->len == sizeof c->buf)
                respond(c->fd, 431, "text/plain", -1, "request head too large\n", 0, 0);
            return 0;
        }
    }
    /* Copy the head out: the buffer is reused while the body is read. */
    size_t head_len = (size_t)(end - (c->buf + c->pos)) + 4;
    char head[HEAD_MAX + 1];
    memcpy(head, c->buf + c->pos, head_len);
    head[head_len - 4] = '\0';
    c->pos += head_len;

    Request req = {0};
    char *line_end = strstr(head, "\r\n");
    char *rest = line_end ? line_end + 2 : head + strlen(head);
    if (line_end) *line_end = '\0';
    char *version = NULL;
    req.method = strtok_r(head, " ", &version);
    char *target = req.method ? strtok_r(NULL, " ", &version) : NULL;
    version = version ? trim(version) : NULL;
    if (!req.method || !target || !version || strncmp(version, "HTTP/1.", 7) != 0 || target[0] != '/') {
        respond(c->fd, 400, "text/plain", -1, "bad request line\n", 0, 0);
        return 0;
    }
    int keep_alive = strcmp(version, "HTTP/1.0") != 0;
    long long length = 0;
    int chunked = 0, expect_continue = 0;
    while (*rest) {
        char *next = strstr(rest, "\r\n");
        if (next) *next = '\0';
        char *colon = strchr(rest, ':');
        if (!colon || colon == rest || req.count == MAX_HEADERS) {
            respond(c->fd, 400, "text/plain", -1, "bad header\n", 0, 0);
            return 0;
        }
        *colon = '\0';
        char *name = rest, *value = trim(colon + 1);
        req.names[req.count] = name;
        req.values[req.count++] = value;
        if (!strcasecmp(name, "Content-Length")) {
            char *bad;
            length = strtoll(value, &bad, 10);
            if (*bad || length < 0) {
                respond(c->fd, 400, "text/plain", -1, "bad Content-Length\n", 0, 0);
                return 0;
            }
        } else if (!strcasecmp(name, "Transfer-Encoding")) {
            if (strcasecmp(value, "chunked") != 0) {
                respond(c->fd, 501, "text/plain", -1, "only chunked transfer encoding\n", 0, 0);
                return 0;
            }
            chunked = 1;
        } else if (!strcasecmp(name, "Connection")) {
            if (strcasestr(value, "close")) keep_alive = 0;
            else if (strcasestr(value, "keep-alive")) keep_alive = 1;
        } else if (!strcasecmp(name, "Expect") && !strcasecmp(value, "100-continue")) {
            expect_continue = 1;
        }
        rest = next ? next + 2 : rest + strlen(rest);
    }
    char *query = strchr(target, '?');
    if (query) *query++ = '\0';
    req.path = target;
    req.query = query;
    int head_only = !strcmp(req.method, "HEAD");

    if (!chunked && length > max_body) {
        respond(c->fd, 413, "text/plain", -1, "request body too large\n", 0, 0);
        return 0;
    }
    if (expect_continue && (chunked || length > 0)) {
        if (write_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0) return 0;
    }
    int in = memfile("stdin");
    if (in < 0) return 0;
    int ok = 0;
    if (!chunked) {
        ok = copy_body(c, in, length) == 0;
    } else {
        long long total = 0;
        for (;;) {
            char *size_line = read_line(c);
            if (!size_line) break;
            char *bad;
            long long size = strtoll(size_line, &bad, 16);
            if (bad == size_line || size < 0) break;
            if (size == 0) {
                char *trailer;
                while ((trailer = read_line(c)) && *trailer) {}
                ok = trailer != NULL;
                break;
            }
            total += size;
            if (total > max_body) {
                close(in);
                respond(c->fd, 413, "text/plain", -1, "request body too large\n", 0, 0);
                return 0;
            }
            if (copy_body(c, in, size) < 0 || !read_line(c)) break;
        }
    }
    if (!ok) {
        close(in);
        respond(c->fd, 400, "text/plain", -1, "incomplete request body\n", 0, 0);
        return 0;
    }

    int result;
    if (!strcmp(req.path, HEALTH_PATH)) {
        result = respond(c->fd, 200, "application/json", -1, "{\"status\":\"ok\"}", keep_alive,
                         head_only);
    } else {
        int out = memfile("stdout"), err = memfile("stderr");
        if (out < 0 || err < 0) {
            close(in);
            return 0;
        }
        int status = run_program(&req, in, out, err);
        if (stopping) keep_alive = 0;
        if (status == 200) result = respond(c->fd, 200, content_type, out, NULL, keep_alive, head_only);
        else result = respond(c->fd, status, "text/plain; charset=utf-8", err, NULL, keep_alive, head_only);
        close(out);
        close(err);
    }
    close(in);
    return result == 0 && keep_alive && !stopping;
}

static void serve_connection(int fd) {
    static Conn c; /* one per process: the process serves one connection */
    c.fd = fd;
    c.len = c.pos = 0;
    while (serve_one(&c)) {}
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* ---------------------------------------------------------------- main */

/* Collect exited children (and orphans: we are PID 1); 1 while some are still running. */
static int reap(void) {
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid <= 0) return pid == 0; /* -1 with ECHILD: no children left */
        for (int i = 0; i < MAX_KIDS; i++)
            if (kids[i] == pid) kids[i] = 0;
    }
}

static void remember(pid_t pid) {
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == 0) { kids[i] = pid; return; }
}

int main(void) {
    fprocess = getenv("fprocess");
    if (!fprocess || !*fprocess) {
        say("set fprocess to the command to run for each request (function.yml options.command)");
        return 2;
    }
    if (getenv("content_type") && *getenv("content_type")) content_type = getenv("content_type");
    int port = (int)env_number("PORT", 8080);
    max_body = (long long)env_number("FAASO_MAX_BODY", (double)max_body);
    exec_timeout = env_number("FAASO_EXEC_TIMEOUT", exec_timeout);
    grace = env_number("FAASO_SHUTDOWN_GRACE", grace);

    struct sigaction sa = {0};
    sa.sa_handler = on_stop; /* no SA_RESTART: waits are interrupted */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t blocked, open_mask;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGTERM);
    sigaddset(&blocked, SIGINT);
    sigaddset(&blocked, SIGCHLD);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    sigemptyset(&open_mask);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0) {
        say("cannot listen on port %d: %s", port, strerror(errno));
        return 1;
    }
    printf("faaso watchdog: serving on 0.0.0.0:%d, running: %s\n", port, fprocess);
    fflush(stdout);

    while (!stopping) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int n = ppoll(&p, 1, NULL, &open_mask); /* signals are delivered only in here */
        reap();
        if (n <= 0) continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            serve_connection(fd);
            _exit(0);
        }
        if (pid < 0) say("fork: %s", strerror(errno));
        else remember(pid);
        close(fd);
    }

    /* Stop accepting; connection processes finish the request they are serving, idle ones go. */
    close(lfd);
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0) kill(kids[i], SIGTERM);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (reap()) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = grace - ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9);
        if (left <= 0) {
            say("requests still running after the shutdown grace; exiting anyway");
            break;
        }
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        sigtimedwait(&chld, NULL, &ts);
    }
    return 0;
}
