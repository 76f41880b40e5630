/*
 * vmc-helper: the two things the guest agent needs that Node cannot do (no ioctl, no clock_settime).
 *   vmc-helper settime <epoch-nanoseconds>   set CLOCK_REALTIME
 *   vmc-helper reseed <hex bytes>            RNDADDENTROPY (credited) then RNDRESEEDCRNG
 *   vmc-helper serve                         the same commands as lines on stdin ("settime NS", "reseed HEX"),
 *                                            one reply line each ("ok" or "err MESSAGE"); the agent keeps one
 *                                            running, because a fork+exec costs 60-150 ms under TCG
 * A plain write to /dev/urandom mixes bytes in without crediting entropy or forcing a reseed, so clones of one
 * template would keep producing the same stream; the ioctls make the new seed take effect at once.
 * Built statically at image build time (gcc -static), so it needs nothing else in the guest.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Runs one command; returns 0 on success, else writes a message to err and returns 1 (2: bad input). */
static int run(const char *cmd, const char *arg, char *err, size_t errlen) {
  if (strcmp(cmd, "settime") == 0) {
    char *end;
    errno = 0;
    unsigned long long ns = strtoull(arg, &end, 10);
    if (errno || *end || !*arg) { snprintf(err, errlen, "settime: bad number"); return 2; }
    struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };
    if (clock_settime(CLOCK_REALTIME, &ts) != 0) { snprintf(err, errlen, "clock_settime: %s", strerror(errno)); return 1; }
    return 0;
  }
  if (strcmp(cmd, "reseed") == 0) {
    size_t len = strlen(arg);
    if (len == 0 || len % 2 || len > 1024) { snprintf(err, errlen, "reseed: need 1-512 hex bytes"); return 2; }
    size_t n = len / 2;
    unsigned char buf[sizeof(struct rand_pool_info) + 512];
    struct rand_pool_info *p = (struct rand_pool_info *)buf;
    for (size_t i = 0; i < n; i++) {
      int hi = hexval(arg[2 * i]), lo = hexval(arg[2 * i + 1]);
      if (hi < 0 || lo < 0) { snprintf(err, errlen, "reseed: bad hex"); return 2; }
      ((unsigned char *)p->buf)[i] = (unsigned char)(hi << 4 | lo);
    }
    p->entropy_count = (int)(n * 8);
    p->buf_size = (int)n;
    int fd = open("/dev/urandom", O_RDWR);
    if (fd < 0) { snprintf(err, errlen, "open /dev/urandom: %s", strerror(errno)); return 1; }
    int rc = 0;
    if (ioctl(fd, RNDADDENTROPY, p) != 0) { snprintf(err, errlen, "RNDADDENTROPY: %s", strerror(errno)); rc = 1; }
    else if (ioctl(fd, RNDRESEEDCRNG) != 0) { snprintf(err, errlen, "RNDRESEEDCRNG: %s", strerror(errno)); rc = 1; }
    close(fd);
    return rc;
  }
  snprintf(err, errlen, "unknown command %s", cmd);
  return 2;
}

int main(int argc, char **argv) {
  char err[256];
  if (argc == 2 && strcmp(argv[1], "serve") == 0) {
    char line[1200];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
      line[strcspn(line, "\r\n")] = 0;
      char *sp = strchr(line, ' ');
      if (!sp) { printf("err bad line\n"); continue; }
      *sp = 0;
      if (run(line, sp + 1, err, sizeof err) == 0) printf("ok\n");
      else printf("err %s\n", err);
    }
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: vmc-helper settime NS | reseed HEX | serve\n");
    return 2;
  }
  int rc = run(argv[1], argv[2], err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  return rc;
}
