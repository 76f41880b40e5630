/**
 * Entry point of the in-guest agent (bundled to `agent.mjs` and run by the guest's init in a restart loop).
 *
 * Why the port is opened this way (research §2.2): libuv treats a character device as a FILE, so
 * `net.Socket({fd})` refuses it; a pipe handle opened on the fd gives a real stream. A read started before any
 * host is connected returns EOF at once, so the agent first writes a frame with a *blocking* write (in the
 * thread pool), which returns only once a host is connected, and only then starts reading. When the host goes
 * away, reading returns EOF: the agent closes the port, reopens it and waits for the next owner.
 */
import { openSync, write } from 'node:fs';
import { Socket } from 'node:net';
import { encodeFrame } from '../../protocol/agent/framing.js';
import { AGENT_PROTOCOL_VERSION } from '../../protocol/agent/messages.js';
import { linuxOps, prewarm } from './ops.js';
import { AgentServer, monotonicUs } from './server.js';

const PORT = process.argv[2] ?? '/dev/virtio-ports/vmcache.agent';

interface PipeHandle {
  open(fd: number): number;
}
const { Pipe, constants } = (
  process as unknown as {
    binding(n: string): { Pipe: new (t: number) => PipeHandle; constants: { SOCKET: number } };
  }
).binding('pipe_wrap');

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Opens the port and waits for a host; `connUs`: when the host was seen (guest monotonic µs). */
async function openPort(): Promise<{ sock: Socket; connUs: number }> {
  for (;;) {
    try {
      const fd = openSync(PORT, 'r+');
      const hello = encodeFrame({ t: 'ready', version: AGENT_PROTOCOL_VERSION });
      // Blocks until a host connects.
      await new Promise<void>((resolve, reject) => write(fd, hello, (e) => (e ? reject(e) : resolve())));
      const connUs = monotonicUs();
      const handle = new Pipe(constants.SOCKET);
      handle.open(fd);
      const sock = new Socket({ handle, readable: true, writable: true } as unknown as ConstructorParameters<
        typeof Socket
      >[0]);
      return { sock, connUs };
    } catch (err) {
      // EBUSY while the previous handle is still closing; anything else is logged and retried.
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') console.error(`vmcache-agent: ${String(err)}`);
      await sleep(50);
    }
  }
}

async function main(): Promise<void> {
  // Before the first greeting: a VM is only "ready" once the agent is warm.
  await prewarm();
  const server = new AgentServer(linuxOps);
  process.on('uncaughtException', (err) => console.error(`vmcache-agent: uncaught ${err.stack ?? err}`));
  for (;;) {
    const { sock, connUs } = await openPort();
    await server.serve(sock, connUs);
  }
}

void main();
