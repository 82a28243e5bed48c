/* pull: see pull.h. One download is one or two blocking libcurl transfers
 * into NAME.part (opened O_APPEND and locked, so two pulls of one model
 * cannot interleave their bytes). Every byte written is also fed to the
 * SHA-256, and a resume first hashes what the .part already holds, so the
 * digest always covers exactly the file on disk. The second transfer only
 * happens when the server refuses the range we asked for (416, or a 206
 * starting elsewhere): then the .part is thrown away and fetched whole. */
#include "cli/pull.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "engine/gguf.h"

#define IO_CHUNK (1u << 20)
#define TTY_REDRAW_MS 200.0
#define UNKNOWN_SIZE_STEP (16u << 20) /* a progress line every 16 MiB when the size is unknown */

/* --- names and places ---------------------------------------------------- */

int pull_default_dir(char *out, size_t n) {
    const char *v;
    int len;
    if ((v = getenv("MSOA_MODEL_DIR")) && *v) len = snprintf(out, n, "%s", v);
    else if ((v = getenv("XDG_CACHE_HOME")) && *v) len = snprintf(out, n, "%s/msoa/models", v);
    else if ((v = getenv("HOME")) && *v) len = snprintf(out, n, "%s/.cache/msoa/models", v);
    else return -1;
    return len > 0 && (size_t)len < n ? 0 : -1;
}

int pull_sha256_valid(const char *s) {
    size_t i = 0;
    for (; s[i]; i++)
        if (!strchr("0123456789abcdefABCDEF", s[i])) return 0;
    return i == 64;
}

/* A name that stays inside the cache directory and is not hidden. */
static int name_ok(const char *s) {
    if (!*s || *s == '.' || strlen(s) > 200) return 0;
    for (; *s; s++)
        if (*s == '/' || (unsigned char)*s < 0x20) return 0;
    return 1;
}

/* Checks the URL (http or https, parseable) and picks the file name: the
 * given one, or the last segment of the URL's decoded path. */
static int url_and_name(const char *url, const char *given, char *name, size_t n, char *err, size_t errlen) {
    CURLU *u = curl_url();
    char *scheme = NULL, *path = NULL;
    int rc = -1;
    CURLUcode uc;
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if ((uc = curl_url_set(u, CURLUPART_URL, url, 0)) != CURLUE_OK) {
        snprintf(err, errlen, "bad URL '%s': %s", url, curl_url_strerror(uc));
    } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
               (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))) {
        snprintf(err, errlen, "bad URL '%s': only http:// and https:// are supported", url);
    } else if (given) {
        if (!name_ok(given)) snprintf(err, errlen, "bad --name '%s': want a plain file name", given);
        else rc = snprintf(name, n, "%s", given) < (int)n ? 0 : -1;
    } else if (curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) != CURLUE_OK) {
        snprintf(err, errlen, "bad URL '%s': cannot decode its path", url);
    } else {
        const char *slash = strrchr(path, '/');
        const char *last = slash ? slash + 1 : path;
        if (!name_ok(last)) snprintf(err, errlen, "cannot take a file name from URL '%s'; give one with --name", url);
        else rc = snprintf(name, n, "%s", last) < (int)n ? 0 : -1;
    }
    if (rc < 0 && !err[0]) snprintf(err, errlen, "file name too long");
    curl_free(scheme);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

/* mkdir -p */
static int make_dirs(const char *dir, char *err, size_t errlen) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        snprintf(err, errlen, "directory name too long");
        return -1;
    }
    for (char *s = p + 1;; s++) {
        int end = *s == '\0';
        if (*s != '/' && !end) continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create directory '%s': %s", p, strerror(errno));
            return -1;
        }
        if (end) break;
        *s = '/';
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "'%s' is not a directory", dir);
        return -1;
    }
    return 0;
}

/* --- human-readable figures ---------------------------------------------- */

static const char *human_bytes(double x, char *out, size_t n) {
    static const char *const unit[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (x >= 1000 && u < 4) {
        x /= 1000;
        u++;
    }
    snprintf(out, n, u ? "%.1f %s" : "%.0f %s", x, unit[u]);
    return out;
}

static const char *human_duration(double s, char *out, size_t n) {
    long t = s < 0 ? 0 : s > 359999 ? 359999 : (long)(s + 0.5);
    if (t >= 3600) snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, n, "%ld:%02ld", t / 60, t % 60);
    return out;
}

/* --- progress ------------------------------------------------------------ */

/* On a terminal, one line redrawn in place; elsewhere (logs, pipes) a line
 * per 10% so the output stays readable. */
typedef struct progress {
    FILE *out;
    int tty;
    double t0_ms, last_ms;
    uint64_t base;   /* bytes already present when this transfer started */
    long last_step;  /* last step printed when not a terminal */
    int drawn;       /* a terminal line is open */
} progress;

static void progress_start(progress *p, FILE *out, uint64_t base) {
    p->out = out;
    p->tty = out && isatty(fileno(out));
    p->t0_ms = p->last_ms = clock_now_ms();
    p->base = base;
    p->last_step = -1;
    p->drawn = 0;
}

/* total 0: unknown. */
static void progress_show(progress *p, uint64_t now, uint64_t total, int final) {
    if (!p->out) return;
    double t = clock_now_ms();
    long step = total ? (long)(now * 10 / total) : (long)(now / UNKNOWN_SIZE_STEP);
    if (p->tty ? !final && t - p->last_ms < TTY_REDRAW_MS : step <= p->last_step) return;
    p->last_ms = t;
    p->last_step = step;
    double secs = (t - p->t0_ms) / 1000, speed = secs > 0 ? (double)(now - p->base) / secs : 0;
    char a[32], b[32], s[32], eta[32];
    human_bytes((double)now, a, sizeof a);
    human_bytes(speed, s, sizeof s);
    if (p->tty) fputs("\r", p->out);
    else fputs("msoa pull: ", p->out);
    if (total)
        fprintf(p->out, "%3d%%  %s / %s  %s/s", (int)(now * 100 / total), a, human_bytes((double)total, b, sizeof b), s);
    else
        fprintf(p->out, "%s  %s/s", a, s);
    if (total && speed > 0 && now < total) fprintf(p->out, "  ETA %s", human_duration((double)(total - now) / speed, eta, sizeof eta));
    fputs(p->tty ? "\033[K" : "\n", p->out);
    p->drawn = p->tty;
    fflush(p->out);
}

/* Ends the terminal line so that what follows starts on its own. */
static void progress_end(progress *p) {
    if (p->drawn) fputc('\n', p->out);
    p->drawn = 0;
}

/* --- hashing ------------------------------------------------------------- */

/* Feeds the first n bytes of fd to md. */
static int hash_fd(EVP_MD_CTX *md, int fd, uint64_t n, const char *what, char *err, size_t errlen) {
    char *chunk = malloc(IO_CHUNK);
    uint64_t off = 0;
    if (!chunk) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    while (off < n) {
        size_t want = n - off < IO_CHUNK ? (size_t)(n - off) : IO_CHUNK;
        ssize_t got = pread(fd, chunk, want, (off_t)off);
        if (got <= 0) {
            snprintf(err, errlen, "cannot read '%s': %s", what, got < 0 ? strerror(errno) : "file shrank");
            break;
        }
        if (!EVP_DigestUpdate(md, chunk, (size_t)got)) {
            snprintf(err, errlen, "SHA-256 failed");
            break;
        }
        off += (uint64_t)got;
    }
    free(chunk);
    return off == n ? 0 : -1;
}

static int hash_hex(EVP_MD_CTX *md, char out[65]) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_DigestFinal_ex(md, d, &n) || n != 32) return -1;
    for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
    return 0;
}

/* --- one transfer -------------------------------------------------------- */

typedef struct dl {
    const char *url, *part;
    int fd;                  /* the .part, O_APPEND */
    EVP_MD_CTX *md;          /* over every byte of the .part */
    uint64_t have;           /* bytes in the .part */
    uint64_t total;          /* expected final size, 0 if unknown */
    /* the response being received (the last one, after redirects) */
    long status;
    char reason[64];
    int64_t cr_start, cr_total;  /* Content-Range; -1 when absent or '*' */
    int body_started;        /* its first body bytes arrived */
    int receiving;           /* and they go into the .part */
    int os_errno;            /* of a failed connect */
    int bad_range;           /* 206 that does not continue our bytes */
    int write_errno;         /* writing the .part failed */
    int hash_failed;
    progress pr;
} dl;

static void parse_status_line(dl *d, const char *line) {
    const char *sp = strchr(line, ' ');
    char *end;
    d->status = sp ? strtol(sp + 1, &end, 10) : 0;
    d->reason[0] = '\0';
    if (sp) {
        end += strspn(end, " ");
        snprintf(d->reason, sizeof d->reason, "%.*s", (int)strcspn(end, "\r\n"), end);
    }
    d->cr_start = d->cr_total = -1;
}

/* Content-Range: "bytes START-END/TOTAL"; START or TOTAL may be "*". */
static void parse_content_range(dl *d, const char *v) {
    v += strspn(v, " \t");
    if (strncasecmp(v, "bytes", 5)) return;
    v += 5 + strspn(v + 5, " \t");
    d->cr_start = *v == '*' ? -1 : strtoll(v, NULL, 10);
    const char *slash = strchr(v, '/');
    d->cr_total = slash && slash[1] != '*' ? strtoll(slash + 1, NULL, 10) : -1;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud) {
    dl *d = ud;
    size_t len = size * n;
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), data);
    if (!strncmp(line, "HTTP/", 5)) parse_status_line(d, line);
    else if (!strncasecmp(line, "content-range:", 14)) parse_content_range(d, line + 14);
    return len;
}

/* Starts over: the server will send the whole file. */
static int restart_part(dl *d) {
    if (ftruncate(d->fd, 0) < 0) {
        d->write_errno = errno;
        return -1;
    }
    d->have = 0;
    if (!EVP_DigestInit_ex(d->md, EVP_sha256(), NULL)) {
        d->hash_failed = 1;
        return -1;
    }
    return 0;
}

/* The first body bytes of the final response: decide where they go. Error
 * statuses are reported from d->status once curl returns. */
static int begin_body(dl *d) {
    d->body_started = 1;
    if (d->status == 206) {
        if (d->cr_start != (int64_t)d->have) {
            d->bad_range = 1;
            return -1;
        }
    } else if (d->status == 200) {
        if (d->have > 0) {
            if (d->pr.out) fprintf(d->pr.out, "msoa pull: the server does not resume downloads; starting over\n");
            if (restart_part(d) < 0) return -1;
        }
    } else {
        return -1;
    }
    progress_start(&d->pr, d->pr.out, d->have);
    d->receiving = 1;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud) {
    dl *d = ud;
    size_t len = size * n;
    if (!d->body_started && begin_body(d) < 0) return 0;
    if (!d->receiving) return 0;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(d->fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            d->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    if (!EVP_DigestUpdate(d->md, data, len)) {
        d->hash_failed = 1;
        return 0;
    }
    d->have += len;
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    dl *d = ud;
    (void)dlnow, (void)ultotal, (void)ulnow;
    if (!d->receiving) return 0;
    if (dltotal > 0) d->total = d->pr.base + (uint64_t)dltotal;
    progress_show(&d->pr, d->have, d->total, 0);
    return 0;
}

#define SET(opt, val) \
    do { \
        if (rc == CURLE_OK) rc = curl_easy_setopt(c, opt, val); \
    } while (0)

/* One request: the rest of the file from d->have on. cerr gets curl's detail. */
static CURLcode transfer(dl *d, char cerr[CURL_ERROR_SIZE]) {
    CURL *c = curl_easy_init();
    if (!c) return CURLE_FAILED_INIT;
    char range[32];
    snprintf(range, sizeof range, "%llu-", (unsigned long long)d->have);
    CURLcode rc = CURLE_OK;
    cerr[0] = '\0';
    SET(CURLOPT_URL, d->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 1L); /* model hosts redirect to their CDN */
    SET(CURLOPT_MAXREDIRS, 10L);
    SET(CURLOPT_USERAGENT, "msoa-pull/1");
    SET(CURLOPT_ERRORBUFFER, cerr);
    SET(CURLOPT_CONNECTTIMEOUT, 30L);
    SET(CURLOPT_LOW_SPEED_LIMIT, 1L); /* a stalled server: nothing for a minute */
    SET(CURLOPT_LOW_SPEED_TIME, 60L);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, d);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, d);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, d);
    SET(CURLOPT_NOPROGRESS, 0L);
    if (d->have > 0) SET(CURLOPT_RANGE, range);
    if (rc == CURLE_OK) rc = curl_easy_perform(c);
    long os_errno = 0;
    if (rc == CURLE_COULDNT_CONNECT && curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK)
        d->os_errno = (int)os_errno;
    curl_easy_cleanup(c);
    return rc;
}

/* --- the download -------------------------------------------------------- */

static void transfer_error(const dl *d, CURLcode rc, const char *cerr, char *err, size_t errlen) {
    const char *detail = cerr[0] ? cerr : curl_easy_strerror(rc);
    char a[32], b[32];
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        snprintf(err, errlen, "cannot resolve the host of %s: %s", d->url, detail);
        break;
    case CURLE_COULDNT_CONNECT:
        /* curl's text does not say why; the socket error does ("Connection refused") */
        snprintf(err, errlen, "cannot connect to %s: %s", d->url, d->os_errno ? strerror(d->os_errno) : detail);
        break;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_GOT_NOTHING:
        if (!d->receiving) {
            snprintf(err, errlen, "download of %s failed: %s", d->url, detail);
            break;
        }
        human_bytes((double)d->have, a, sizeof a);
        if (d->total) human_bytes((double)d->total, b, sizeof b);
        snprintf(err, errlen, "download interrupted at %s%s%s (%s); run the same command again to resume from %s",
                 a, d->total ? " of " : "", d->total ? b : "", detail, d->part);
        break;
    default:
        snprintf(err, errlen, "download of %s failed: %s", d->url, detail);
    }
}

/* A failure on our side (disk, hash) during a transfer, as a message. */
static int local_error(const dl *d, char *err, size_t errlen) {
    if (d->write_errno)
        snprintf(err, errlen, "cannot write '%s': %s%s", d->part, strerror(d->write_errno),
                 d->write_errno == ENOSPC ? " (disk full); free some space and run the same command to resume" : "");
    else if (d->hash_failed)
        snprintf(err, errlen, "SHA-256 failed");
    return d->write_errno || d->hash_failed ? -1 : 0;
}

/* Fills the .part to the end, resuming from what it holds. */
static int download(dl *d, char *err, size_t errlen) {
    char cerr[CURL_ERROR_SIZE];
    for (int attempt = 0;; attempt++) {
        d->status = 0;
        d->reason[0] = '\0';
        d->body_started = d->receiving = d->bad_range = d->os_errno = 0;
        CURLcode rc = transfer(d, cerr);
        if (rc == CURLE_OK && d->receiving) progress_show(&d->pr, d->have, d->total, 1);
        progress_end(&d->pr);
        if (local_error(d, err, errlen) < 0) return -1;
        /* 416 for "bytes=N-" where N is the size: the .part is already whole. */
        if (d->status == 416 && d->cr_total >= 0 && (uint64_t)d->cr_total == d->have) return 0;
        if ((d->status == 416 || d->bad_range) && attempt == 0 && d->have > 0) {
            if (d->pr.out) fprintf(d->pr.out, "msoa pull: the server cannot continue the partial download; starting over\n");
            if (restart_part(d) < 0) return local_error(d, err, errlen);
            continue;
        }
        if (d->bad_range) {
            snprintf(err, errlen, "%s answered with bytes from %lld when asked for bytes from %llu", d->url,
                     (long long)d->cr_start, (unsigned long long)d->have);
            return -1;
        }
        int refused = rc == CURLE_OK || rc == CURLE_WRITE_ERROR;
        if (d->status && d->status != 200 && d->status != 206 && (refused || d->status >= 400)) {
            snprintf(err, errlen, "%sHTTP %ld%s%s from %s", d->status >= 400 ? "" : "unexpected ", d->status,
                     d->reason[0] ? " " : "", d->reason, d->url);
            return -1;
        }
        if (rc != CURLE_OK) {
            transfer_error(d, rc, cerr, err, errlen);
            return -1;
        }
        /* A 206 may end before the file does ("bytes N-M/TOTAL" with M short). */
        if (d->status == 206 && d->cr_total >= 0 && (uint64_t)d->cr_total != d->have) {
            snprintf(err, errlen, "%s sent %llu of %lld bytes; run the same command again to fetch the rest", d->url,
                     (unsigned long long)d->have, (long long)d->cr_total);
            return -1;
        }
        return 0;
    }
}

/* The downloaded bytes must be a GGUF file the engine can open. */
static int check_gguf(int fd, const char *part, char *err, size_t errlen) {
    unsigned char head[16];
    ssize_t n = pread(fd, head, sizeof head, 0);
    if (n < 0) {
        snprintf(err, errlen, "cannot read '%s': %s", part, strerror(errno));
        return -1;
    }
    if (n < 4 || memcmp(head, "GGUF", 4)) {
        char shown[sizeof head + 1];
        for (ssize_t i = 0; i < n; i++) shown[i] = head[i] >= 0x20 && head[i] < 0x7f ? (char)head[i] : '.';
        shown[n] = '\0';
        snprintf(err, errlen, "the download is not a GGUF model (it starts with \"%s\", not \"GGUF\")", shown);
        return -1;
    }
    char gerr[512];
    gguf *g = gguf_open(part, gerr, sizeof gerr);
    if (!g) {
        snprintf(err, errlen, "the download is not a valid GGUF model: %s", gerr);
        return -1;
    }
    gguf_close(g);
    return 0;
}

static int sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* An existing final file was verified when it was pulled; with an expected
 * digest it must also match it. 1: use it, 0: download again, -1: error. */
static int existing_ok(const char *path, const char *sha256, FILE *log, char *err, size_t errlen) {
    if (!sha256) return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char hex[65];
    int rc = -1;
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) snprintf(err, errlen, "SHA-256 failed");
    else if (hash_fd(md, fd, (uint64_t)st.st_size, path, err, errlen) == 0) {
        if (hash_hex(md, hex) < 0) snprintf(err, errlen, "SHA-256 failed");
        else rc = !strcasecmp(hex, sha256);
    }
    if (rc == 0 && log) fprintf(log, "msoa pull: '%s' has SHA-256 %s, not the one expected; downloading again\n", path, hex);
    EVP_MD_CTX_free(md);
    close(fd);
    return rc;
}

/* Download, checksum, GGUF check and rename, with the .part open and locked. */
static int fetch_into(dl *d, const char *path, const char *sha256, char *err, size_t errlen) {
    struct stat st;
    char hex[65];
    if (flock(d->fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(err, errlen, errno == EWOULDBLOCK ? "another msoa pull is downloading into '%s'" : "cannot lock '%s': %s",
                 d->part, strerror(errno));
        return -1;
    }
    if (fstat(d->fd, &st) < 0) {
        snprintf(err, errlen, "cannot stat '%s': %s", d->part, strerror(errno));
        return -1;
    }
    d->have = (uint64_t)st.st_size;
    if (d->have && d->pr.out) {
        char a[32];
        fprintf(d->pr.out, "msoa pull: resuming '%s' at %s\n", d->part, human_bytes((double)d->have, a, sizeof a));
    }
    if (hash_fd(d->md, d->fd, d->have, d->part, err, errlen) < 0) return -1;
    if (download(d, err, errlen) < 0) return -1;
    if (fsync(d->fd) < 0) {
        snprintf(err, errlen, "cannot write '%s': %s", d->part, strerror(errno));
        return -1;
    }
    if (hash_hex(d->md, hex) < 0) {
        snprintf(err, errlen, "SHA-256 failed");
        return -1;
    }
    if (sha256 && strcasecmp(hex, sha256)) {
        snprintf(err, errlen, "checksum mismatch for %s: expected SHA-256 %s, got %s; the download was deleted", d->url, sha256, hex);
        unlink(d->part);
        return -1;
    }
    if (check_gguf(d->fd, d->part, err, errlen) < 0) {
        unlink(d->part);
        return -1;
    }
    if (rename(d->part, path) < 0) {
        snprintf(err, errlen, "cannot rename '%s' to '%s': %s", d->part, path, strerror(errno));
        return -1;
    }
    if (d->pr.out) fprintf(d->pr.out, "msoa pull: SHA-256 %s%s\n", hex, sha256 ? " (as expected)" : "");
    return 0;
}

int pull_model(const pull_opts *o, char *path, size_t pathlen, char *err, size_t errlen) {
    char dir[PATH_MAX], name[256], part[PATH_MAX + 8];
    err[0] = '\0';
    if (o->sha256 && !pull_sha256_valid(o->sha256)) {
        snprintf(err, errlen, "bad --sha256 '%s': want 64 hex digits", o->sha256);
        return -1;
    }
    if (url_and_name(o->url, o->name, name, sizeof name, err, errlen) < 0) return -1;
    if (o->dir) snprintf(dir, sizeof dir, "%s", o->dir);
    else if (pull_default_dir(dir, sizeof dir) < 0) {
        snprintf(err, errlen, "no model directory: set MSOA_MODEL_DIR or HOME, or pass --dir");
        return -1;
    }
    if (make_dirs(dir, err, errlen) < 0) return -1;
    if (snprintf(path, pathlen, "%s/%s", dir, name) >= (int)pathlen ||
        snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    if (access(path, F_OK) == 0) {
        int ok = existing_ok(path, o->sha256, o->log, err, errlen);
        if (ok) {
            if (ok > 0 && o->log) fprintf(o->log, "msoa pull: '%s' is already here\n", path);
            return ok > 0 ? 0 : -1;
        }
    }

    dl d = {.url = o->url, .part = part, .pr = {.out = o->log}};
    d.fd = open(part, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (d.fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", part, strerror(errno));
        return -1;
    }
    d.md = EVP_MD_CTX_new();
    int rc = -1;
    if (!d.md || !EVP_DigestInit_ex(d.md, EVP_sha256(), NULL)) snprintf(err, errlen, "SHA-256 failed");
    else rc = fetch_into(&d, path, o->sha256, err, errlen);
    EVP_MD_CTX_free(d.md);
    /* A failure before any byte arrived (404, no connection) leaves no
     * empty .part behind; the lock is still held, so it is ours to remove. */
    struct stat st;
    if (rc < 0 && fstat(d.fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) unlink(part);
    close(d.fd);
    if (rc == 0 && sync_dir(dir) < 0 && o->log)
        fprintf(o->log, "msoa pull: warning: cannot sync directory '%s': %s\n", dir, strerror(errno));
    return rc;
}
