/**
 * Codes of the errors the guest agent replies with (`res.error.code`; the host wraps them in a
 * VMC_ERR_AGENT_REQUEST whose `details.guestCode` is the code). Stable like the host's codes: docs/errors.md
 * lists them and `test/unit/errors.test.ts` pins this table against that document. Pure data, so both the
 * guest agent's bundle and the host import it.
 */
export const GuestErrorCodes = {
  BAD_REQUEST: 'the request frame failed validation',
  NO_SESSION: 'a request came before the hello handshake of this connection',
  BAD_SIGNAL: 'the signal is not one the guest knows',
  NO_STDIN: 'the process has no open stdin',
  NO_PROCESS: 'no running process has that id',
  NO_TERMINAL: 'the process was not started with a terminal',
  NO_CGROUP: 'no container cgroup has that name',
  SPAWN_FAILED: 'the process could not be started',
  FAILED: 'the request failed otherwise',
} as const;

/** A code the guest agent replies with. */
export type GuestErrorCode = keyof typeof GuestErrorCodes;
