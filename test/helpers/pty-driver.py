"""Runs a program on a new pty for a test (Node cannot make a pty): the program's terminal output goes to
stdout as it comes; JSON lines on stdin drive it: {"send": "<base64>"}, {"resize": [rows, cols]}. Exits with
the program's status (128 + signal when killed). Usage: pty-driver.py ROWS COLS PROGRAM ARGS..."""
import base64, fcntl, json, os, pty, select, signal, struct, sys, termios

rows, cols, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]

def winsize(fd, r, c):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', r, c, 0, 0))

pid, master = pty.fork()
if pid == 0:
    winsize(0, rows, cols)
    os.execvp(argv[0], argv)
winsize(master, rows, cols)
buf = b''
stdin_open = True
status = None
while True:
    fds = [master] + ([0] if stdin_open else [])
    ready, _, _ = select.select(fds, [], [], 0.2)
    if master in ready:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b''
        if not data:
            break
        os.write(1, data)
    if 0 in ready:
        chunk = os.read(0, 65536)
        if not chunk:
            stdin_open = False
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            m = json.loads(line)
            if 'send' in m:
                os.write(master, base64.b64decode(m['send']))
            elif 'resize' in m:
                winsize(master, *m['resize'])
                # The session's foreground group gets SIGWINCH from the kernel.
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
        # Drain what is left.
        while True:
            r, _, _ = select.select([master], [], [], 0.1)
            if not r:
                break
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            os.write(1, data)
        break
if status is None:
    _, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
