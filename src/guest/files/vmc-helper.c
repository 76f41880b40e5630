/*
 * vmc-helper: the two things the guest agent needs that Node cannot do (no ioctl, no clock_settime).
 *   vmc-helper settime <epoch-nanoseconds>   set CLOCK_REALTIME
 *   vmc-helper reseed <hex bytes>            RNDADDENTROPY (credited) then RNDRESEEDCRNG
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

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: vmc-helper settime NS | reseed HEX\n");
    return 2;
  }
  if (strcmp(argv[1], "settime") == 0) {
    char *end;
    errno = 0;
    unsigned long long ns = strtoull(argv[2], &end, 10);
    if (errno || *end) { fprintf(stderr, "settime: bad number\n"); return 2; }
    struct timespec ts = { (time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL) };
    if (clock_settime(CLOCK_REALTIME, &ts) != 0) { perror("clock_settime"); return 1; }
    return 0;
  }
  if (strcmp(argv[1], "reseed") == 0) {
    size_t len = strlen(argv[2]);
    if (len == 0 || len % 2 || len > 1024) { fprintf(stderr, "reseed: need 1-512 hex bytes\n"); return 2; }
    size_t n = len / 2;
    struct rand_pool_info *p = malloc(sizeof(*p) + n);
    if (!p) return 1;
    for (size_t i = 0; i < n; i++) {
      int hi = hexval(argv[2][2 * i]), lo = hexval(argv[2][2 * i + 1]);
      if (hi < 0 || lo < 0) { fprintf(stderr, "reseed: bad hex\n"); return 2; }
      ((unsigned char *)p->buf)[i] = (unsigned char)(hi << 4 | lo);
    }
    p->entropy_count = (int)(n * 8);
    p->buf_size = (int)n;
    int fd = open("/dev/urandom", O_RDWR);
    if (fd < 0) { perror("open /dev/urandom"); return 1; }
    if (ioctl(fd, RNDADDENTROPY, p) != 0) { perror("RNDADDENTROPY"); return 1; }
    if (ioctl(fd, RNDRESEEDCRNG) != 0) { perror("RNDRESEEDCRNG"); return 1; }
    close(fd);
    return 0;
  }
  fprintf(stderr, "unknown command %s\n", argv[1]);
  return 2;
}
