import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BUSYBOX_IMAGE, type CriNode, startCriNode } from '../helpers/cri.js';
import { exitCode, streamExec } from '../helpers/cri-stream.js';

const SUBNET = '198.19.8.0/24';
/** Each exec, from the connect to the status (a busybox command on the host: well under a second). */
const DEADLINE_MS = 30_000;

/**
 * `kubectl exec` (with and without `-it`) without a kubelet: a CRI `Exec` gives a URL on containerd's streaming
 * server and a WebSocket client attaches the process's stdio there. Through the `runc` handler (no VM); the pod
 * setup takes the handler, for the VM handlers once their shims attach terminals.
 */
describe('CRI streaming exec: containerd streams an exec over WebSocket (runc handler)', () => {
  const dir = mkdtempSync('/tmp/vmc-');
  let node: CriNode | undefined;
  let container = '';

  /** A pod of `handler` whose busybox container sleeps, to exec into. */
  const sleeper = async (cri: CriNode['cri'], handler: string) => {
    const config = {
      metadata: { name: 'stream', uid: 'uid-stream', namespace: 'default', attempt: 0 },
      hostname: 'stream',
      logDirectory: join(dir, 'logs'),
    };
    const { podSandboxId } = await cri.runPodSandbox({ config, runtimeHandler: handler });
    const { containerId } = await cri.createContainer({
      podSandboxId,
      sandboxConfig: config,
      config: {
        metadata: { name: 'sleeper', attempt: 0 },
        image: { image: BUSYBOX_IMAGE },
        command: ['sleep', '3600'],
        logPath: 'sleeper.log',
      },
    });
    await cri.startContainer({ containerId });
    return containerId;
  };
  /** A streaming exec's URL, as a kubelet asks for it (a tty merges stderr into stdout, so none asked). */
  const execUrl = async (cmd: string[], tty: boolean) =>
    (await node!.cri.exec({ containerId: container, cmd, tty, stdin: true, stdout: true, stderr: !tty })).url;

  before(async () => {
    node = await startCriNode({
      dir: join(dir, 'node'),
      env: process.env,
      bridge: `vmcstr${process.pid % 100000}`,
      subnet: SUBNET,
    });
    container = await sleeper(node.cri, 'runc');
  });

  after(async () => {
    await node?.stop(); // drains the node: the pod is stopped and removed
    rmSync(dir, { recursive: true, force: true });
  });

  it('tty: the process runs on a pty, and the resize sent first reaches it', async () => {
    // containerd 1.6's CRI exec starts the process and only then applies resizes, so a bare `stty size` may see
    // 0 rows (busybox then prints "stty: standard input" and still exits 0): the script polls (≤ 5 s) until a
    // size arrives, as a shell would on SIGWINCH.
    const poll = 's=$(stty size 2>/dev/null); case $s in [1-9]*) echo "$s"; exit 0;; esac';
    const script = `tty; for i in $(seq 50); do ${poll}; sleep 0.1; done; exit 1`;
    const r = await streamExec(await execUrl(['sh', '-c', script], true), {
      resize: { rows: 33, cols: 101 },
      deadlineMs: DEADLINE_MS,
    });
    assert.match(r.stdout, /^\/dev\/pts\/\d+\r\n33 101\r\n$/, 'the pty translates \\n to \\r\\n');
    assert.deepEqual([r.stderr, exitCode(r.status)], ['', 0]);
  });

  it('tty: stdin is the terminal, which echoes it, and ^D ends cat', async () => {
    const r = await streamExec(await execUrl(['cat'], true), {
      stdin: 'hello\n\x04',
      deadlineMs: DEADLINE_MS,
    });
    assert.equal(r.stdout, 'hello\r\nhello\r\n', "the terminal's echo, then cat's copy");
    assert.equal(exitCode(r.status), 0);
  });

  it('no tty: stdin reaches the process, stdout and stderr come apart, the exit code comes as the status', async () => {
    // v4 cannot close stdin short of closing the socket (v5.channel.k8s.io can, but containerd 1.6 answers an
    // offer of v5 with v4), so `cat` would never see EOF: `head -n 1` reads the one line.
    const script = 'head -n 1; echo to-stderr >&2; exit 3';
    const r = await streamExec(await execUrl(['sh', '-c', script], false), {
      stdin: 'hello\n',
      deadlineMs: DEADLINE_MS,
    });
    assert.deepEqual([r.stdout, r.stderr, exitCode(r.status)], ['hello\n', 'to-stderr\n', 3]);
    assert.match(JSON.stringify(r.status), /"reason":"NonZeroExitCode"/);
    assert.deepEqual(node!.errors(), [], "containerd's log has no error");
  });
});
