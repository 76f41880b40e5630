/*
 * vmc-helper: what the guest agent needs that Node cannot do (no ioctl, clock_settime, mount, unshare, chroot).
 *   vmc-helper settime <epoch-nanoseconds>   set CLOCK_REALTIME
 *   vmc-helper reseed <hex bytes>            RNDADDENTROPY (credited) then RNDRESEEDCRNG
 *   vmc-helper syncfs <path>                 syncfs(2) of the file system at path (the share, before an exit)
 *   vmc-helper serve                         the same commands as lines on stdin ("settime NS", "reseed HEX"),
 *                                            one reply line each ("ok" or "err MESSAGE"); the agent keeps one
 *                                            running, because a fork+exec costs 60-150 ms under TCG;
 *                                            "nop X" only answers (the agent wakes it as a host connects)
 *   vmc-helper net "NAME MTU [m=MAC] [a=CIDR]... [r=DEST[,VIA]]..."
 *                                            gives NIC NAME its MTU (and MAC) and sets it up, then adds each address
 *                                            (a=) and route (r=, DEST a CIDR or "default", VIA an optional
 *                                            gateway), in that order, over rtnetlink: one pipe round trip in
 *                                            serve mode where `busybox sh` + one `ip` per step cost ~500 ms
 *                                            under TCG (a fork of the guest's Node, then one fork per command)
 *   vmc-helper down NAME                     sets NIC NAME's link down
 *   vmc-helper enter [options] -- PROGRAM ARGS...
 *                                            runs a container process: its cgroup (-c NAME, -l file=value),
 *                                            new mount/UTS/IPC namespaces (or those of
 *                                            a running container process, -j PID), the container's mounts, its
 *                                            root, user and working directory, then exec. Setup errors and a
 *                                            failed exec are written to fd 3, which exec closes (FD_CLOEXEC):
 *                                            the agent reads fd 3 to EOF, so "nothing read" means "started".
 *                                            Also: masked (-M) and read-only (-O) paths, namespaced sysctls
 *                                            (-s), root propagation (-P), rlimits (-L), oom_score_adj (-o),
 *                                            namespaces shared with a pod's process (-N KIND:PID) and
 *                                            startContainer hooks (-k, state on stdin from -S).
 *                                            -T ROWS,COLS: a terminal, as runc's `process.terminal`: the
 *                                            process gets a pty of the container's own devpts as its
 *                                            controlling terminal and stdio; the stand-in relays stdin to the
 *                                            pty and the pty to stdout, and applies "ROWS COLS" lines read
 *                                            on fd 4 as window sizes.
 * A plain write to /dev/urandom mixes bytes in without crediting entropy or forcing a reseed, so clones of one
 * template would keep producing the same stream; the ioctls make the new seed take effect at once.
 * Built statically at image build time (gcc -static), so it needs nothing else in the guest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <linux/random.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* ---- net: configure a NIC over rtnetlink ------------------------------------------------------------ */

/* One rtnetlink request: the header, the family-specific part, room for the attributes. */
struct nlreq {
  struct nlmsghdr h;
  union { struct ifinfomsg link; struct ifaddrmsg addr; struct rtmsg route; } u;
  char attrs[128];
};

static void nl_attr(struct nlreq *q, unsigned short type, const void *data, size_t len) {
  struct rtattr *a = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->h.nlmsg_len));
  a->rta_type = type;
  a->rta_len = (unsigned short)RTA_LENGTH(len);
  memcpy(RTA_DATA(a), data, len);
  q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends one request and waits for its acknowledgement: 0, or the kernel's negative errno. */
static int nl_talk(int fd, struct nlreq *q) {
  static unsigned seq;
  q->h.nlmsg_seq = ++seq;
  q->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  if (sendto(fd, q, q->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -errno;
  char buf[8192];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) { if (errno == EINTR) continue; return -errno; }
    int len = (int)n;
    for (struct nlmsghdr *r = (struct nlmsghdr *)buf; NLMSG_OK(r, len); r = NLMSG_NEXT(r, len))
      if (r->nlmsg_seq == q->h.nlmsg_seq && r->nlmsg_type == NLMSG_ERROR)
        return ((struct nlmsgerr *)NLMSG_DATA(r))->error;
  }
}

/* Parses an address (prefix -1) or CIDR into bytes; returns its family, or 0 if it is neither. */
static int parse_ip(const char *s, unsigned char out[16], int *prefix, int want_prefix) {
  char host[64];
  const char *slash = strchr(s, '/');
  size_t n = slash ? (size_t)(slash - s) : strlen(s);
  if (n == 0 || n >= sizeof host || (want_prefix && !slash) || (!want_prefix && slash)) return 0;
  memcpy(host, s, n);
  host[n] = 0;
  int family = inet_pton(AF_INET, host, out) == 1 ? AF_INET : inet_pton(AF_INET6, host, out) == 1 ? AF_INET6 : 0;
  if (!family) return 0;
  int max = family == AF_INET ? 32 : 128;
  *prefix = max;
  if (slash) {
    char *end;
    long p = strtol(slash + 1, &end, 10);
    if (*end || end == slash + 1 || p < 0 || p > max) return 0;
    *prefix = (int)p;
  }
  return family;
}

/* Sets the link up (with its MTU, and its MAC when mac is given) or down: one RTM_NEWLINK. */
static int net_link(int fd, int index, int up, unsigned mtu, const unsigned char *mac) {
  struct nlreq q = { .h = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)), .nlmsg_type = RTM_NEWLINK } };
  q.u.link.ifi_family = AF_UNSPEC;
  q.u.link.ifi_index = index;
  q.u.link.ifi_flags = up ? IFF_UP : 0;
  q.u.link.ifi_change = IFF_UP;
  /* The kernel applies the address and the MTU before the flags: the link comes up with its own MAC (and an
     IPv6 link-local address made from it). */
  if (mac) nl_attr(&q, IFLA_ADDRESS, mac, 6);
  if (mtu) nl_attr(&q, IFLA_MTU, &mtu, sizeof mtu);
  return nl_talk(fd, &q);
}

static int parse_mac(const char *s, unsigned char mac[6]) {
  unsigned v[6];
  char tail;
  if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6) return 0;
  for (int i = 0; i < 6; i++) mac[i] = (unsigned char)v[i];
  return 1;
}

static int net_addr(int fd, int index, const char *cidr) {
  unsigned char ip[16];
  int prefix, family = parse_ip(cidr, ip, &prefix, 1);
  if (!family) return -EINVAL;
  struct nlreq q = { .h = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)), .nlmsg_type = RTM_NEWADDR,
                            .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL } };
  q.u.addr.ifa_family = (unsigned char)family;
  q.u.addr.ifa_prefixlen = (unsigned char)prefix;
  q.u.addr.ifa_index = (unsigned)index;
  size_t len = family == AF_INET ? 4 : 16;
  nl_attr(&q, IFA_LOCAL, ip, len); /* as `ip addr add`: the local address and the peer are the same */
  nl_attr(&q, IFA_ADDRESS, ip, len);
  return nl_talk(fd, &q);
}

/* spec: "DEST" or "DEST,VIA"; DEST a CIDR or "default" (of the gateway's family, IPv4 without one). */
static int net_route(int fd, int index, char *spec) {
  char *via = strchr(spec, ',');
  if (via) *via++ = 0;
  unsigned char dst[16] = { 0 }, gw[16];
  int dst_len = 0, gw_len, family = 0, gw_family = 0;
  if (via && !(gw_family = parse_ip(via, gw, &gw_len, 0))) return -EINVAL;
  if (strcmp(spec, "default") == 0) family = gw_family ? gw_family : AF_INET;
  else if (!(family = parse_ip(spec, dst, &dst_len, 1))) return -EINVAL;
  if (gw_family && gw_family != family) return -EINVAL;
  struct nlreq q = { .h = { .nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)), .nlmsg_type = RTM_NEWROUTE,
                            .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL } };
  q.u.route.rtm_family = (unsigned char)family;
  q.u.route.rtm_dst_len = (unsigned char)dst_len;
  q.u.route.rtm_table = RT_TABLE_MAIN;
  q.u.route.rtm_protocol = RTPROT_BOOT; /* what `ip route add` sets */
  q.u.route.rtm_scope = via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
  q.u.route.rtm_type = RTN_UNICAST;
  size_t len = family == AF_INET ? 4 : 16;
  if (dst_len) nl_attr(&q, RTA_DST, dst, len);
  if (via) nl_attr(&q, RTA_GATEWAY, gw, len);
  unsigned oif = (unsigned)index;
  nl_attr(&q, RTA_OIF, &oif, sizeof oif);
  return nl_talk(fd, &q);
}

static int nl_open(char *err, size_t errlen) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) snprintf(err, errlen, "net: netlink socket: %s", strerror(errno));
  return fd;
}

/* arg: "NAME MTU [m=MAC] [a=CIDR]... [r=DEST[,VIA]]..."; stops at the first step that fails, naming it. */
static int net(char *arg, char *err, size_t errlen) {
  char *save, *name = strtok_r(arg, " ", &save), *mtus = strtok_r(NULL, " ", &save), *end;
  if (!name || !mtus) { snprintf(err, errlen, "net: need NAME MTU"); return 2; }
  unsigned long mtu = strtoul(mtus, &end, 10);
  if (*end || mtu < 68 || mtu > 65535) { snprintf(err, errlen, "net: bad MTU %s", mtus); return 2; }
  char *t = strtok_r(NULL, " ", &save);
  unsigned char mac[6], *macp = NULL;
  if (t && strncmp(t, "m=", 2) == 0) {
    if (!parse_mac(t + 2, mac)) { snprintf(err, errlen, "net: bad MAC %s", t + 2); return 2; }
    macp = mac;
    t = strtok_r(NULL, " ", &save);
  }
  int index = (int)if_nametoindex(name);
  if (!index) { snprintf(err, errlen, "net: no NIC %s: %s", name, strerror(errno)); return 1; }
  int fd = nl_open(err, errlen);
  if (fd < 0) return 1;
  int rc = net_link(fd, index, 1, (unsigned)mtu, macp);
  if (rc) snprintf(err, errlen, "net: %s mtu %lu up: %s", name, mtu, strerror(-rc));
  for (; !rc && t; t = strtok_r(NULL, " ", &save)) {
    char step[96];
    snprintf(step, sizeof step, "%s", t + (t[0] && t[1] == '=' ? 2 : 0));
    if (strncmp(t, "a=", 2) == 0) rc = net_addr(fd, index, t + 2);
    else if (strncmp(t, "r=", 2) == 0) rc = net_route(fd, index, t + 2);
    else rc = -EINVAL;
    if (rc) snprintf(err, errlen, "net: %s %s on %s: %s", t[0] == 'r' ? "route" : "address", step, name,
                     rc == -EINVAL ? "not understood" : strerror(-rc));
  }
  close(fd);
  return rc == -EINVAL ? 2 : rc ? 1 : 0;
}

/* arg: "NAME": sets the link down (its IPv6 addresses go with it; the kernel keeps IPv4 ones). */
static int net_down(const char *name, char *err, size_t errlen) {
  int index = (int)if_nametoindex(name);
  if (!index) { snprintf(err, errlen, "down: no NIC %s: %s", name, strerror(errno)); return 1; }
  int fd = nl_open(err, errlen);
  if (fd < 0) return 1;
  int rc = net_link(fd, index, 0, 0, NULL);
  if (rc) snprintf(err, errlen, "down: %s: %s", name, strerror(-rc));
  close(fd);
  return rc ? 1 : 0;
}

/* Runs one command; returns 0 on success, else writes a message to err and returns 1 (2: bad input). */
/* churn PASSES: writes fresh x86-64 code into 64 pages and calls each, PASSES times (1-200). Under TCG each pass
 * makes QEMU translate all of it anew (a write to a translated page invalidates its translations, whose space
 * stays used until the buffer is flushed): ~1.5 MiB of translation buffer per pass, ~20 ms. The host uses it to
 * make QEMU flush its buffer before a pooled VM's warm-up (hypervisor/qemu/translations.ts). Each block stores
 * below the stack pointer (the red zone, unused by this leaf call) and adds to rax: no side effect. */
#define CHURN_PAGES 64
#define CHURN_INSNS 200
static int churn(const char *arg, char *err, size_t errlen) {
  char *end;
  errno = 0;
  long passes = strtol(arg, &end, 10);
  if (errno || *end || !*arg || passes < 1 || passes > 200) { snprintf(err, errlen, "churn: need 1-200 passes"); return 2; }
#if defined(__x86_64__)
  long page = sysconf(_SC_PAGESIZE);
  unsigned char *code = mmap(NULL, (size_t)page * CHURN_PAGES, PROT_READ | PROT_WRITE | PROT_EXEC,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (code == MAP_FAILED) { snprintf(err, errlen, "churn: mmap: %s", strerror(errno)); return 1; }
  for (long p = 0; p < passes; p++) {
    for (int pg = 0; pg < CHURN_PAGES; pg++) {
      unsigned char *b = code + (size_t)pg * page;
      int o = 0;
      for (int i = 0; i < CHURN_INSNS; i++) {
        static const unsigned char mov[] = { 0x48, 0x89, 0x44, 0x24 }; /* mov [rsp+disp8], rax */
        memcpy(b + o, mov, sizeof mov); o += sizeof mov;
        b[o++] = (unsigned char)(0xf8 - 8 * (i % 8));                /* disp8: -8 ... -64 */
        b[o++] = 0x48; b[o++] = 0x83; b[o++] = 0xc0;                  /* add rax, imm8 */
        b[o++] = (unsigned char)(p + i);                              /* differs each pass */
      }
      b[o] = 0xc3; /* ret */
    }
    for (int pg = 0; pg < CHURN_PAGES; pg++) ((void (*)(void))(code + (size_t)pg * page))();
  }
  munmap(code, (size_t)page * CHURN_PAGES);
  return 0;
#else
  snprintf(err, errlen, "churn: only on x86-64");
  return 1;
#endif
}

static int run(const char *cmd, char *arg, char *err, size_t errlen) {
  if (strcmp(cmd, "nop") == 0) return 0;
  if (strcmp(cmd, "churn") == 0) return churn(arg, err, errlen); /* serve mode: the agent wakes the helper before a hand-off's requests */
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
  if (strcmp(cmd, "net") == 0) return net(arg, err, errlen);
  if (strcmp(cmd, "down") == 0) return net_down(arg, err, errlen);
  if (strcmp(cmd, "syncfs") == 0) {
    int fd = open(arg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) { snprintf(err, errlen, "open %s: %s", arg, strerror(errno)); return 1; }
    int rc = syncfs(fd) != 0;
    if (rc) snprintf(err, errlen, "syncfs %s: %s", arg, strerror(errno));
    close(fd);
    return rc;
  }
  snprintf(err, errlen, "unknown command %s", cmd);
  return 2;
}


/* ---- enter: start a container process ---------------------------------------------------------------- */

#define STATUS_FD 3

/* Reports a setup failure on the status fd (and stderr) and exits; the agent turns it into a failed exec. */
static void die(int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (write(STATUS_FD, msg, strlen(msg)) < 0) fprintf(stderr, "vmc-helper: %s\n", msg);
  _exit(code);
}

/* mkdir -p */
static int mkdirs(const char *path, mode_t mode) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, mode) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, mode) != 0 && errno != EEXIST ? -1 : 0;
}

/* Creates the mount point `target`: a directory, or an empty file when a file is bind-mounted onto it. */
static void mountpoint(const char *target, int file) {
  struct stat st;
  if (lstat(target, &st) == 0) return;
  if (!file) {
    if (mkdirs(target, 0755) != 0) die(125, "mkdir %s: %s", target, strerror(errno));
    return;
  }
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", target);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    if (mkdirs(dir, 0755) != 0) die(125, "mkdir %s: %s", dir, strerror(errno));
  }
  int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) die(125, "create %s: %s", target, strerror(errno));
  close(fd);
}

/*
 * The path of `dest` (a path inside the container) resolved against `root` as if `root` were "/": every
 * symlink on the way, absolute or relative, is followed within the root and never above it (runc's
 * securejoin). A destination reached through a link in the rootfs (an image's /etc/resolv.conf ->
 * /run/...) is mounted where the container will see it, and a link cannot send a mount outside the root.
 */
static void secure_join(const char *root, const char *dest, char *out, size_t outlen) {
  char rest[2 * PATH_MAX], cur[PATH_MAX] = "", cand[PATH_MAX], full[2 * PATH_MAX], link[PATH_MAX];
  char tmp[3 * PATH_MAX];
  int links = 0;
  snprintf(rest, sizeof rest, "%s", dest);
  const char *p = rest;
  const char *r = strcmp(root, "/") == 0 ? "" : root;
  while (*p) {
    while (*p == '/') p++;
    if (!*p) break;
    const char *e = strchr(p, '/');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len > NAME_MAX) die(125, "mount destination %s: a name is too long", dest);
    char comp[NAME_MAX + 1];
    memcpy(comp, p, len);
    comp[len] = 0;
    p += len;
    if (strcmp(comp, ".") == 0) continue;
    if (strcmp(comp, "..") == 0) {
      char *s = strrchr(cur, '/');
      if (s) *s = 0;
      continue;
    }
    if (snprintf(cand, sizeof cand, "%s/%s", cur, comp) >= (int)sizeof cand) die(125, "mount destination %s is too long", dest);
    snprintf(full, sizeof full, "%s%s", r, cand);
    struct stat st;
    if (lstat(full, &st) == 0 && S_ISLNK(st.st_mode)) {
      if (++links > 40) die(125, "mount destination %s: too many symbolic links", dest);
      ssize_t n = readlink(full, link, sizeof link - 1);
      if (n < 0) die(125, "readlink %s: %s", full, strerror(errno));
      link[n] = 0;
      snprintf(tmp, sizeof tmp, "%s/%s", link, p); /* the link's target, then what was left */
      if (link[0] == '/') cur[0] = 0;             /* absolute: from the container's root */
      if (snprintf(rest, sizeof rest, "%s", tmp) >= (int)sizeof rest) die(125, "mount destination %s: links too long", dest);
      p = rest;
      continue;
    }
    snprintf(cur, sizeof cur, "%s", cand);
  }
  if (snprintf(out, outlen, "%s%s", r, cur[0] ? cur : "/") >= (int)outlen) die(125, "mount destination %s is too long", dest);
}

/* One mount, "TYPE\x1fFLAGS\x1fSOURCE\x1fTARGET\x1fDATA"; TARGET is inside the container root. */
static void do_mount(const char *root, char *spec) {
  char *f[5];
  for (int i = 0; i < 5; i++) {
    f[i] = spec;
    char *sep = strchr(spec, '\x1f');
    if (i < 4) {
      if (!sep) die(125, "bad mount spec");
      *sep = 0;
      spec = sep + 1;
    }
  }
  const char *type = f[0], *source = f[2], *data = f[4];
  unsigned long flags = strtoul(f[1], NULL, 10);
  char target[PATH_MAX];
  secure_join(root, f[3], target, sizeof target);
  if (strcmp(type, "bind") == 0) {
    struct stat st;
    if (stat(source, &st) != 0) die(125, "bind mount source %s: %s", source, strerror(errno));
    mountpoint(target, !S_ISDIR(st.st_mode));
    if (mount(source, target, NULL, MS_BIND | (flags & MS_REC), NULL) != 0)
      die(125, "bind mount %s on %s: %s", source, f[3], strerror(errno));
    unsigned long extra = flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
    /* A bind mount ignores these flags: they take effect only on a remount. */
    if (extra && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | extra, NULL) != 0)
      die(125, "remount %s: %s", f[3], strerror(errno));
    return;
  }
  mountpoint(target, 0);
  if (mount(source, target, type, flags, *data ? data : NULL) != 0)
    die(125, "mount %s on %s: %s", type, f[3], strerror(errno));
}

/* The device nodes every container gets (bind-mounted from the guest's devtmpfs), and the usual links. */
static void default_devices(const char *root) {
  static const char *devs[] = { "null", "zero", "full", "random", "urandom", "tty" };
  char path[PATH_MAX], src[64];
  snprintf(path, sizeof path, "%s/dev", root);
  if (mkdirs(path, 0755) != 0) die(125, "mkdir %s: %s", path, strerror(errno));
  for (size_t i = 0; i < sizeof devs / sizeof *devs; i++) {
    snprintf(path, sizeof path, "%s/dev/%s", root, devs[i]);
    snprintf(src, sizeof src, "/dev/%s", devs[i]);
    struct stat st;
    if (lstat(path, &st) == 0 && (S_ISCHR(st.st_mode) || S_ISLNK(st.st_mode))) continue;
    mountpoint(path, 1);
    if (mount(src, path, NULL, MS_BIND, NULL) != 0) die(125, "bind %s: %s", src, strerror(errno));
  }
  /* /dev/ptmx is the devpts instance's own multiplexer, as runc links it (the spec's default devices). */
  static const char *links[][2] = {
    { "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" },
    { "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" }, { "pts/ptmx", "ptmx" },
  };
  for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
    snprintf(path, sizeof path, "%s/dev/%s", root, links[i][1]);
    if (symlink(links[i][0], path) != 0 && errno != EEXIST) die(125, "symlink %s: %s", path, strerror(errno));
  }
}

/* Writes `value` to a cgroup file; returns 0 or -1 (errno set). */
static int cg_write(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, value, strlen(value));
  int e = errno;
  close(fd);
  errno = e;
  return n < 0 ? -1 : 0;
}

/*
 * Moves this process into the cgroup v2 leaf /sys/fs/cgroup/vmcache/NAME (made if needed, with the memory,
 * cpu and pids controllers enabled on the way) after writing the limits ("file=value", e.g. memory.max=67108864).
 */
static void enter_cgroup(const char *name, char **limits, int nlimits) {
  static const char *ctrls[] = { "+memory", "+cpu", "+pids" };
  char path[PATH_MAX], file[PATH_MAX + 64];
  for (size_t i = 0; i < sizeof ctrls / sizeof *ctrls; i++) {
    cg_write("/sys/fs/cgroup/cgroup.subtree_control", ctrls[i]); /* a missing controller is not fatal */
  }
  if (mkdir("/sys/fs/cgroup/vmcache", 0755) != 0 && errno != EEXIST) die(125, "mkdir cgroup vmcache: %s", strerror(errno));
  for (size_t i = 0; i < sizeof ctrls / sizeof *ctrls; i++) cg_write("/sys/fs/cgroup/vmcache/cgroup.subtree_control", ctrls[i]);
  snprintf(path, sizeof path, "/sys/fs/cgroup/vmcache/%s", name);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) die(125, "mkdir cgroup %s: %s", name, strerror(errno));
  for (int i = 0; i < nlimits; i++) {
    char *eq = strchr(limits[i], '=');
    if (!eq) die(125, "bad cgroup limit %s", limits[i]);
    *eq = 0;
    snprintf(file, sizeof file, "%s/%s", path, limits[i]);
    if (cg_write(file, eq + 1) != 0) die(125, "cgroup %s = %s: %s", limits[i], eq + 1, strerror(errno));
  }
  char pid[32];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  snprintf(file, sizeof file, "%s/cgroup.procs", path);
  if (cg_write(file, pid) != 0) die(125, "join cgroup %s: %s", name, strerror(errno));
}

/* Hides `path` (inside the root) as runc does: a read-only tmpfs on a directory, /dev/null on anything else. */
static void mask_path(const char *root, const char *p) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s%s", root, p);
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return; /* nothing to hide */
    die(125, "masked path %s: %s", p, strerror(errno));
  }
  int rc = S_ISDIR(st.st_mode) ? mount("tmpfs", path, "tmpfs", MS_RDONLY, NULL)
                               : mount("/dev/null", path, NULL, MS_BIND, NULL);
  if (rc != 0) die(125, "mask %s: %s", p, strerror(errno));
}

/* Makes `path` (inside the root) read-only: a bind onto itself, remounted read-only with its other flags kept. */
static void readonly_path(const char *root, const char *p) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s%s", root, p);
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT) return;
    die(125, "read-only path %s: %s", p, strerror(errno));
  }
  if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) die(125, "bind %s read-only: %s", p, strerror(errno));
  struct statvfs sv;
  unsigned long keep = statvfs(path, &sv) == 0 ? (sv.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)) : 0;
  if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, NULL) != 0)
    die(125, "remount %s read-only: %s", p, strerror(errno));
}

/* Writes a namespaced sysctl "key=value" (key dotted: net.ipv4.ip_forward) through the guest's /proc/sys. */
static void set_sysctl(char *kv) {
  char *eq = strchr(kv, '=');
  if (!eq) die(125, "bad sysctl %s", kv);
  *eq = 0;
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "/proc/sys/%s", kv) >= (int)sizeof path) die(125, "sysctl %s: name too long", kv);
  for (char *c = path + 10; *c; c++) if (*c == '.') *c = '/';
  if (cg_write(path, eq + 1) != 0) die(125, "sysctl %s = %s: %s", kv, eq + 1, strerror(errno));
}

/* "RESOURCE:SOFT:HARD" (numbers, or inf) → setrlimit. */
static void set_rlimit(const char *spec) {
  char soft[32], hard[32];
  int res;
  if (sscanf(spec, "%d:%31[^:]:%31s", &res, soft, hard) != 3) die(125, "bad rlimit %s", spec);
  struct rlimit rl = {
    strcmp(soft, "inf") == 0 ? RLIM_INFINITY : (rlim_t)strtoull(soft, NULL, 10),
    strcmp(hard, "inf") == 0 ? RLIM_INFINITY : (rlim_t)strtoull(hard, NULL, 10),
  };
  if (setrlimit(res, &rl) != 0) die(125, "setrlimit %d (%s): %s", res, spec, strerror(errno));
}

static void set_oom_score_adj(const char *v) {
  if (cg_write("/proc/self/oom_score_adj", v) != 0) die(125, "oom_score_adj %s: %s", v, strerror(errno));
}

/* Splits `s` at `sep` into a NULL-terminated vector (in place); an empty string gives an empty vector. */
static char **split(char *s, char sep) {
  size_t n = 1;
  for (char *c = s; *c; c++) n += *c == sep;
  char **v = calloc(n + 1, sizeof *v);
  if (!v) die(125, "out of memory");
  size_t i = 0;
  if (*s) {
    v[i++] = s;
    for (char *c = s; *c; c++) if (*c == sep) { *c = 0; v[i++] = c + 1; }
  }
  v[i] = NULL;
  return v;
}

/*
 * Runs a startContainer hook, "TIMEOUT\x1fPATH\x1fARGS\x1fENV" (ARGS and ENV \x1e-separated), in the container
 * (this process's root and namespaces, as the spec asks) with the OCI state on stdin; a failure or a timeout
 * stops the start.
 */
static void run_hook(char *spec, const char *state) {
  char **f = split(spec, '\x1f');
  if (!f[0] || !f[1] || !f[2] || !f[3]) die(125, "bad hook spec");
  int timeout = atoi(f[0]);
  const char *path = f[1];
  char **argv = split(f[2], '\x1e'), **envp = split(f[3], '\x1e');
  char *dflt[] = { (char *)path, NULL };
  int in[2];
  if (pipe2(in, O_CLOEXEC) != 0) die(125, "pipe: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0) die(125, "fork: %s", strerror(errno));
  if (pid == 0) {
    dup2(in[0], 0);
    execve(path, argv[0] ? argv : dflt, envp);
    _exit(127);
  }
  close(in[0]);
  if (state && write(in[1], state, strlen(state)) < 0) { /* a hook that does not read its stdin is fine */ }
  close(in[1]);
  int st = 0;
  for (long waited = 0;; waited += 10) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) die(125, "startContainer hook %s: waitpid: %s", path, strerror(errno));
    if (waited >= timeout * 1000L) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      die(125, "startContainer hook %s did not finish within %d s", path, timeout);
    }
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  if (WIFSIGNALED(st)) die(125, "startContainer hook %s was killed by signal %d", path, WTERMSIG(st));
  if (WEXITSTATUS(st) == 127) die(125, "startContainer hook %s: cannot run it in the container (missing?)", path);
  if (WEXITSTATUS(st) != 0) die(125, "startContainer hook %s failed with exit status %d", path, WEXITSTATUS(st));
}

/*
 * The guest pid of the process that *is* the container whose stand-in has pid `pid`: a container runs as the
 * only child of its `enter` (which waits for it in the guest's PID namespace, see fork_into_pidns). A pid
 * without a child is taken as it is.
 */
static int container_pid(int pid) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return pid;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return pid;
  buf[n] = 0;
  int child = atoi(buf);
  return child > 0 ? child : pid;
}

/* setns into namespace KIND of guest process PID; `pid` is entered for the children this process forks. */
static void setns_of(int pid, const char *kind, int flag) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/ns/%s", pid, kind);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, flag) != 0) die(125, "join the %s namespace of container process %d: %s", kind, pid, strerror(errno));
  close(fd);
}

/* Joins namespace KIND ("ipc", "uts", "cgroup", "pid") of the container that guest process PID stands for
 * ("KIND:PID", a pod's sandbox); returns its CLONE_ flag. */
static int join_ns(const char *spec) {
  char kind[16];
  int pid;
  if (sscanf(spec, "%15[a-z]:%d", kind, &pid) != 2) die(125, "bad namespace %s", spec);
  int flag = strcmp(kind, "ipc") == 0 ? CLONE_NEWIPC : strcmp(kind, "uts") == 0 ? CLONE_NEWUTS
           : strcmp(kind, "cgroup") == 0 ? CLONE_NEWCGROUP : strcmp(kind, "pid") == 0 ? CLONE_NEWPID : 0;
  if (!flag) die(125, "namespace %s cannot be shared", kind);
  setns_of(container_pid(pid), kind, flag);
  return flag;
}

/* The container process this `enter` waits for: signals sent to this process are passed on to it. */
static volatile pid_t contained = 0;
static void pass_on(int sig) {
  if (contained > 0) kill(contained, sig);
}

/* Ends the stand-in as its container process ended: same code, or killed by the same signal. */
static void exit_like(int st) {
  if (WIFSIGNALED(st)) {
    int sig = WTERMSIG(st);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    prctl(PR_SET_DUMPABLE, 0); /* no core of the stand-in */
    kill(getpid(), sig);
    _exit(128 + sig);
  }
  _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 125);
}

/* Terminal mode: the socket the container's process sends its pty master on, and the window-size pipe. */
#define WINSIZE_FD 4
static int tty_socket[2] = { -1, -1 };

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void set_winsize(int fd, const char *spec) {
  unsigned rows = 0, cols = 0;
  if (sscanf(spec, "%u%*[ ,]%u", &rows, &cols) != 2 || rows == 0 || cols == 0 || rows > 65535 || cols > 65535) return;
  struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
  ioctl(fd, TIOCSWINSZ, &ws);
}

static void on_child(int sig) { (void)sig; }

/*
 * The stand-in's relay in terminal mode: stdin (from the agent) to the pty master, the master to stdout, and
 * window sizes from fd 4 to the master. Ends once the container's process has exited and the pty is drained
 * (EIO: no slave left open); a SIGCHLD interrupts poll, and a 200 ms bound covers one that comes between the
 * check and poll.
 */
static void relay_tty(int master, pid_t pid) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_child;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL); /* no SA_RESTART: poll returns EINTR */
  int in_open = 1, win_open = fcntl(WINSIZE_FD, F_GETFD) >= 0, master_open = 1, st = 0, done = 0;
  char buf[16384], line[64];
  size_t linelen = 0;
  while (master_open || !done) {
    if (!done) {
      pid_t r = waitpid(pid, &st, WNOHANG);
      if (r == pid) done = 1;
    }
    struct pollfd p[3] = {
      { in_open ? 0 : -1, POLLIN, 0 },
      { master_open ? master : -1, POLLIN, 0 },
      { win_open ? WINSIZE_FD : -1, POLLIN, 0 },
    };
    /* Once the process is gone, drain what the pty holds without waiting for more. */
    int n = poll(p, 3, done ? 0 : 200);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) {
      if (done) break;
      continue;
    }
    if (p[1].revents) {
      ssize_t r = read(master, buf, sizeof buf);
      if (r > 0) {
        if (write_all(1, buf, (size_t)r) != 0) master_open = 0;
      } else if (r == 0 || errno != EINTR) master_open = 0;
    }
    if (p[0].revents) {
      ssize_t r = read(0, buf, sizeof buf);
      if (r > 0) write_all(master, buf, (size_t)r);
      else if (r == 0 || errno != EINTR) in_open = 0;
    }
    if (p[2].revents) {
      ssize_t r = read(WINSIZE_FD, line + linelen, sizeof line - 1 - linelen);
      if (r <= 0) win_open = 0;
      else {
        linelen += (size_t)r;
        line[linelen] = 0;
        char *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
          *nl = 0;
          set_winsize(master, line);
          memmove(line, nl + 1, strlen(nl + 1) + 1);
          linelen = strlen(line);
        }
        if (linelen == sizeof line - 1) linelen = 0; /* a line too long for a size: dropped */
      }
    }
  }
  if (!done)
    while (waitpid(pid, &st, 0) < 0)
      if (errno != EINTR) _exit(125);
  exit_like(st);
}

/* Receives the pty master the container's process sends; -1 when it exited before (its setup failed). */
static int receive_master(void) {
  char byte;
  char control[CMSG_SPACE(sizeof(int))];
  struct iovec iov = { &byte, 1 };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  ssize_t r;
  while ((r = recvmsg(tty_socket[0], &msg, 0)) < 0 && errno == EINTR) {}
  struct cmsghdr *c = r > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

/*
 * Forks the container's process into the PID namespace made (unshare) or joined (setns) for children, and
 * returns in that child. This process stays behind in the guest's namespace as its stand-in, the process the
 * agent started and signals: it passes every signal on, and exits as the child does (same code, or killed by
 * the same signal). The child dies with it (PDEATHSIG), and every process of a container's PID namespace dies
 * with its first process, as under runc. Its status pipe (fd 3) stays with the child only. In terminal mode
 * the stand-in relays the child's pty.
 */
static void fork_into_pidns(void) {
  pid_t pid = fork();
  if (pid < 0) die(125, "fork: %s", strerror(errno));
  if (pid == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die(125, "pdeathsig: %s", strerror(errno));
    if (tty_socket[0] >= 0) close(tty_socket[0]);
    if (tty_socket[0] >= 0) close(WINSIZE_FD);
    return;
  }
  contained = pid;
  close(STATUS_FD);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = pass_on;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig = 1; sig < 32; sig++)
    if (sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD) sigaction(sig, &sa, NULL);
  if (tty_socket[0] >= 0) {
    close(tty_socket[1]);
    int master = receive_master();
    close(tty_socket[0]);
    if (master >= 0) relay_tty(master, pid);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) _exit(125);
  exit_like(st);
}

/*
 * Terminal mode, in the container's process (root, in its root, before it becomes the user): a pty of the
 * container's devpts (/dev/ptmx → pts/ptmx) becomes its controlling terminal and stdio, owned by the user as
 * runc makes it; the master goes to the stand-in over the socket.
 */
static void become_tty(const char *size, unsigned long uid, unsigned long gid) {
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) die(125, "open /dev/ptmx: %s", strerror(errno));
  if (unlockpt(master) != 0) die(125, "unlockpt: %s", strerror(errno));
  char name[64];
  if (ptsname_r(master, name, sizeof name) != 0) die(125, "ptsname: %s", strerror(errno));
  int slave = open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) die(125, "open %s: %s", name, strerror(errno));
  if (fchown(slave, (uid_t)uid, (gid_t)gid) != 0 && errno != EPERM) die(125, "chown %s: %s", name, strerror(errno));
  set_winsize(slave, size);
  if (setsid() < 0) die(125, "setsid: %s", strerror(errno));
  if (ioctl(slave, TIOCSCTTY, 0) != 0) die(125, "controlling terminal %s: %s", name, strerror(errno));
  for (int fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) die(125, "dup2: %s", strerror(errno));
  if (slave > 2) close(slave);
  char byte = 0;
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = { &byte, 1 };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &master, sizeof master);
  if (sendmsg(tty_socket[1], &msg, 0) != 1) die(125, "send the pty: %s", strerror(errno));
  close(master);
  close(tty_socket[1]);
}

/*
 * An exec into a running container: joins the PID namespace of the container process that guest process PID
 * stands for (for the child forked next), then, in that child, its cgroup, IPC, UTS and mount namespaces and
 * its root.
 */
static void join_pidns(int pid) {
  setns_of(container_pid(pid), "pid", CLONE_NEWPID);
}

static void join_rest(int pid) {
  static const char *kinds[] = { "cgroup", "ipc", "uts", "mnt" };
  int target = container_pid(pid);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/root", target);
  int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) die(125, "container process %d: %s", target, strerror(errno));
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) setns_of(target, kinds[i], 0);
  if (fchdir(rootfd) != 0 || chroot(".") != 0) die(125, "enter the root of %d: %s", target, strerror(errno));
  close(rootfd);
}

/*
 * Makes `root` the process's root for good: pivot_root, then the old root detached, as runc does. A chroot
 * would leave the guest's root (the share, every other container) one chroot-escape away for a container
 * that is root. "/" (the agent's warm-up run) stays as it is.
 */
static void enter_root(const char *root) {
  if (strcmp(root, "/") == 0) return;
  if (chdir(root) != 0) die(125, "chdir %s: %s", root, strerror(errno));
  if (syscall(SYS_pivot_root, ".", ".") != 0) die(125, "pivot_root %s: %s", root, strerror(errno));
  if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) != 0) die(125, "old root private: %s", strerror(errno));
  if (umount2(".", MNT_DETACH) != 0) die(125, "detach the old root: %s", strerror(errno));
  if (chdir("/") != 0) die(125, "chdir /: %s", strerror(errno));
}

static int enter(int argc, char **argv) {
  if (fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC) != 0) {
    fprintf(stderr, "vmc-helper: enter needs a status pipe on fd 3\n");
    return 125;
  }
  const char *root = NULL, *joinpid = NULL, *hostname = NULL, *cwd = "/", *groups = NULL;
  unsigned long uid = 0, gid = 0;
  int readonly = 0, nonewprivs = 0, i = 2;
  char *mounts[128], *limits[16], *masked[256], *ropaths[256], *sysctls[256], *rlims[16], *nsjoin[3], *hooks[32];
  int nmounts = 0, nlimits = 0, nmasked = 0, nro = 0, nsysctl = 0, nrlim = 0, nns = 0, nhooks = 0;
  const char *cgroup = NULL, *oom = NULL, *state = NULL, *tty = NULL;
  unsigned long propagation = 0;
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    const char *o = argv[i];
    if (strcmp(o, "-R") == 0) { readonly = 1; continue; }
    if (strcmp(o, "-n") == 0) { nonewprivs = 1; continue; }
    if (i + 1 >= argc) die(125, "option %s needs a value", o);
    char *v = argv[++i];
    if (strcmp(o, "-r") == 0) root = v;
    else if (strcmp(o, "-j") == 0) joinpid = v;
    else if (strcmp(o, "-h") == 0) hostname = v;
    else if (strcmp(o, "-w") == 0) cwd = v;
    else if (strcmp(o, "-u") == 0) uid = strtoul(v, NULL, 10);
    else if (strcmp(o, "-g") == 0) gid = strtoul(v, NULL, 10);
    else if (strcmp(o, "-G") == 0) groups = v;
    else if (strcmp(o, "-c") == 0) cgroup = v;
    else if (strcmp(o, "-l") == 0) {
      if (nlimits == 16) die(125, "too many cgroup limits");
      limits[nlimits++] = v;
    }
    else if (strcmp(o, "-m") == 0) {
      if (nmounts == 128) die(125, "too many mounts");
      mounts[nmounts++] = v;
    }
#define PUSH(arr, n, max, what) do { if ((n) == (max)) die(125, "too many " what); (arr)[(n)++] = v; } while (0)
    else if (strcmp(o, "-M") == 0) PUSH(masked, nmasked, 256, "masked paths");
    else if (strcmp(o, "-O") == 0) PUSH(ropaths, nro, 256, "read-only paths");
    else if (strcmp(o, "-s") == 0) PUSH(sysctls, nsysctl, 256, "sysctls");
    else if (strcmp(o, "-L") == 0) PUSH(rlims, nrlim, 16, "rlimits");
    else if (strcmp(o, "-N") == 0) PUSH(nsjoin, nns, 3, "shared namespaces");
    else if (strcmp(o, "-k") == 0) PUSH(hooks, nhooks, 32, "hooks");
    else if (strcmp(o, "-P") == 0) propagation = strtoul(v, NULL, 10);
    else if (strcmp(o, "-o") == 0) oom = v;
    else if (strcmp(o, "-S") == 0) state = v;
    else if (strcmp(o, "-T") == 0) tty = v;
    else die(125, "unknown option %s", o);
  }
  if (i + 1 >= argc) die(125, "no program after --");
  char **args = argv + i + 1;
  /* Per-process limits while still root and in the guest's root (raising a hard limit needs root; the guest's
   * /proc is there whatever the container mounts). Inherited by the container's process. */
  for (int n = 0; n < nrlim; n++) set_rlimit(rlims[n]);
  if (oom) set_oom_score_adj(oom);
  if (tty && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, tty_socket) != 0)
    die(125, "socketpair: %s", strerror(errno));
  if (joinpid) {
    join_pidns(atoi(joinpid));
    fork_into_pidns();
    if (cgroup) enter_cgroup(cgroup, limits, nlimits);
    join_rest(atoi(joinpid));
  } else {
    if (!root) die(125, "-r ROOT is required");
    /* A pod member shares the IPC/UTS (and PID) namespaces of its sandbox's process (CRI's namespace paths). */
    int joined = 0;
    for (int n = 0; n < nns; n++) joined |= join_ns(nsjoin[n]);
    int fresh = (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID) & ~joined;
    if (unshare(fresh) != 0) die(125, "unshare: %s", strerror(errno));
    fork_into_pidns();
    /* In the child, the container's first process: its cgroup, then a cgroup namespace made inside that leaf
     * (its cgroup mount shows the leaf, its own limits, as the root, and /proc/self/cgroup reads "0::/", as
     * under runc with cgroup v2). The stand-in stays outside, so it is neither counted nor signalled with it. */
    if (cgroup) enter_cgroup(cgroup, limits, nlimits);
    if (!(joined & CLONE_NEWCGROUP) && unshare(CLONE_NEWCGROUP) != 0) die(125, "unshare cgroup: %s", strerror(errno));
    /* Nothing mounted for this container may propagate back to the guest's own mount table. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die(125, "make / private: %s", strerror(errno));
    /* A bind of the root onto itself makes it a mount point of its own, which a read-only remount needs. */
    if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0) die(125, "bind %s: %s", root, strerror(errno));
    if (propagation && mount(NULL, root, NULL, propagation, NULL) != 0)
      die(125, "rootfsPropagation of %s: %s", root, strerror(errno));
    for (int m = 0; m < nmounts; m++) do_mount(root, mounts[m]);
    default_devices(root);
    /* Written in the container's own IPC/UTS namespaces (the guest's /proc/sys shows the writer's). */
    for (int n = 0; n < nsysctl; n++) set_sysctl(sysctls[n]);
    if (hostname && sethostname(hostname, strlen(hostname)) != 0) die(125, "sethostname: %s", strerror(errno));
    for (int n = 0; n < nmasked; n++) mask_path(root, masked[n]);
    for (int n = 0; n < nro; n++) readonly_path(root, ropaths[n]);
    if (readonly && mount(NULL, root, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0)
      die(125, "remount %s read-only: %s", root, strerror(errno));
    if (strcmp(root, "/") == 0) {
      if (chdir("/") != 0) die(125, "chdir /: %s", strerror(errno));
    } else enter_root(root);
  }
  if (chdir(cwd) != 0) die(125, "cwd %s: %s", cwd, strerror(errno));
  if (tty) become_tty(tty, uid, gid);
  gid_t gl[64];
  int ng = 0;
  for (const char *p = groups; p && *p && ng < 64;) {
    gl[ng++] = (gid_t)strtoul(p, (char **)&p, 10);
    if (*p == ',') p++;
  }
  if (setgroups(ng, gl) != 0) die(125, "setgroups: %s", strerror(errno));
  if (setgid((gid_t)gid) != 0) die(125, "setgid %lu: %s", gid, strerror(errno));
  if (setuid((uid_t)uid) != 0) die(125, "setuid %lu: %s", uid, strerror(errno));
  if (nonewprivs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die(125, "no_new_privs: %s", strerror(errno));
  for (int n = 0; n < nhooks; n++) run_hook(hooks[n], state);
  execvp(args[0], args);
  /* The message runc gives, so that clients and people recognise it. */
  if (errno == ENOENT) die(127, "exec: \"%s\": executable file not found in $PATH", args[0]);
  die(126, "exec: \"%s\": %s", args[0], strerror(errno));
  return 126;
}

int main(int argc, char **argv) {
  char err[256];
  if (argc >= 2 && strcmp(argv[1], "enter") == 0) return enter(argc, argv);
  if (argc == 2 && strcmp(argv[1], "serve") == 0) {
    static char line[16384]; /* the longest a `net` line gets: NicConfig's bounds (messages.ts) keep it under */
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
    fprintf(stderr, "usage: vmc-helper settime NS | reseed HEX | syncfs PATH | churn PASSES | net \"NAME MTU ...\" | down NAME | serve | enter [options] -- PROGRAM ARGS...\n");
    return 2;
  }
  int rc = run(argv[1], argv[2], err, sizeof err);
  if (rc) fprintf(stderr, "%s\n", err);
  return rc;
}
