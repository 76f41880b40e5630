/** Structured logging, injected. The CLI builds a pino logger; library code only sees this interface. */
export interface Logger {
  debug(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
  /** A logger that adds `bindings` to every record (e.g. `{ subsystem: 'qmp', vmId }`). */
  child(bindings: Record<string, unknown>): Logger;
}

/** A logger that drops everything (tests, library default). */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return nullLogger;
  },
};
