import { constants, openSync, writeSync } from 'node:fs';
import type { Logger } from '../../platform/logger.js';
import { lineLogger } from '../log.js';

/**
 * A logger writing logrus-style lines to the bundle's `log` FIFO, which containerd reads and copies into its
 * own log. Opened once, without blocking (containerd opened its end before `start`); a full FIFO, or no reader
 * (containerd restarting), drops the line rather than stall the daemon. No FIFO: nothing is logged.
 */
export function fifoLogger(path: string, debug: boolean): Logger {
  let fd = -1;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    return lineLogger(() => {}, 'text', 'error');
  }
  return lineLogger(
    (line) => {
      try {
        writeSync(fd, line);
      } catch {
        // EAGAIN (full) or EPIPE (no reader): dropped
      }
    },
    'text',
    debug ? 'debug' : 'info',
  );
}
