/*
 * vmc-console: runc's `--console-socket` for vmcache's host-side processes (Node cannot make a pty or pass a
 * file descriptor over a Unix socket, hence this small host helper, built by `vmcache image build`).
 *
 *   vmc-console [-r FD] SOCKET PROGRAM ARGS...
 *
 * Makes a pty, sends its master over the Unix socket SOCKET (SCM_RIGHTS, with the pty's name as the payload,
 * as runc does; conmon and containerd's shim receive it there), then becomes the session leader with the
 * pty's slave as controlling terminal and stdin/stdout/stderr, and execs PROGRAM. The slave is raw: the
 * container's own pty in the guest does the line discipline (echo, ^C), this one only carries the bytes and
 * the window size (a resize on the master reaches PROGRAM as SIGWINCH). Other fds stay open, so a report
 * pipe survives the exec. A failure before the exec is written to fd FD (-r) as vmcache's detached-process
 * report, {"ok":false,"code":...,"message":...}, and to stderr; the exit status is then 125.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

static int report_fd = -1;

static void fail(const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (report_fd >= 0) {
    /* The message holds paths and strerror text: escape what JSON needs. */
    char json[1200];
    size_t n = 0;
    n += (size_t)snprintf(json, sizeof json, "{\"ok\":false,\"code\":\"VMC_ERR_CONSOLE_SOCKET\",\"message\":\"");
    for (const char *p = msg; *p && n < sizeof json - 8; p++) {
      if (*p == '"' || *p == '\\') json[n++] = '\\';
      json[n++] = (*p >= 0 && *p < 0x20) ? ' ' : *p;
    }
    n += (size_t)snprintf(json + n, sizeof json - n, "\"}");
    if (write(report_fd, json, n) < 0) { /* nobody listens */ }
  }
  fprintf(stderr, "vmc-console: %s\n", msg);
  _exit(125);
}

int main(int argc, char **argv) {
  int i = 1;
  if (i + 1 < argc && strcmp(argv[i], "-r") == 0) {
    report_fd = atoi(argv[i + 1]);
    i += 2;
  }
  if (argc - i < 2) {
    fprintf(stderr, "usage: vmc-console [-r FD] SOCKET PROGRAM ARGS...\n");
    return 2;
  }
  const char *socket_path = argv[i];
  char **program = argv + i + 1;

  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) fail("open /dev/ptmx: %s", strerror(errno));
  if (grantpt(master) != 0 || unlockpt(master) != 0) fail("unlock the pty: %s", strerror(errno));
  char name[64];
  if (ptsname_r(master, name, sizeof name) != 0) fail("ptsname: %s", strerror(errno));
  int slave = open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) fail("open %s: %s", name, strerror(errno));
  struct termios t;
  if (tcgetattr(slave, &t) != 0) fail("tcgetattr %s: %s", name, strerror(errno));
  cfmakeraw(&t);
  if (tcsetattr(slave, TCSANOW, &t) != 0) fail("tcsetattr %s: %s", name, strerror(errno));

  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen(socket_path) >= sizeof addr.sun_path) fail("console socket path too long: %s", socket_path);
  strcpy(addr.sun_path, socket_path);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) fail("socket: %s", strerror(errno));
  if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0)
    fail("connect to the console socket %s: %s", socket_path, strerror(errno));
  char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof control);
  struct iovec iov = { name, strlen(name) };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &master, sizeof master);
  if (sendmsg(sock, &msg, 0) < 0) fail("send the pty over %s: %s", socket_path, strerror(errno));
  close(sock);
  close(master);

  /* Started detached (its own session already) or not: either way a session leader without a terminal. */
  if (setsid() < 0 && getsid(0) != getpid()) fail("setsid: %s", strerror(errno));
  if (ioctl(slave, TIOCSCTTY, 0) != 0) fail("make %s the controlling terminal: %s", name, strerror(errno));
  for (int fd = 0; fd < 3; fd++)
    if (dup2(slave, fd) < 0) fail("dup2: %s", strerror(errno));
  if (slave > 2) close(slave);
  execvp(program[0], program);
  fail("exec %s: %s", program[0], strerror(errno));
  return 125;
}
