import { appendFileSync } from 'node:fs';
import type { Logger } from '../platform/logger.js';

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;
type Level = (typeof LEVELS)[number];

/** logrus's level names: containerd's runc shim reads `level` and `msg` from `--log` (go-runc). */
const LOGRUS: Record<Level, string> = { debug: 'debug', info: 'info', warn: 'warning', error: 'error' };

function quote(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  // logrus quotes any value with characters other than these (so a time, with its colons, is quoted).
  return /^[\w./@^+-]+$/.test(s) ? s : JSON.stringify(s);
}

/** `json` and `text` are runc's `--log-format`s; `human` is for a terminal. */
type LineFormat = 'json' | 'text' | 'human';

function line(format: LineFormat, level: Level, msg: string, fields: Record<string, unknown>): string {
  if (format === 'human') {
    const kv = Object.entries(fields)
      .map(([k, v]) => ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join('');
    return `vmcache: ${level}: ${msg}${kv}\n`;
  }
  const time = new Date().toISOString();
  return format === 'json'
    ? `${JSON.stringify({ level: LOGRUS[level], msg, time, ...fields })}\n`
    : `time=${quote(time)} level=${LOGRUS[level]} msg=${quote(msg)}${Object.entries(fields)
        .map(([k, v]) => ` ${k}=${quote(v)}`)
        .join('')}\n`;
}

/**
 * A logger that writes one line per record, as runc does with `--log FILE --log-format json|text`:
 * `{"level":"error","msg":"...","time":"..."}` or `time="..." level=error msg="..."` (containerd takes the last
 * error line of that file as the reason a runtime command failed), or for people on a terminal:
 * `vmcache: warn: message key=value ...`.
 */
export function lineLogger(
  write: (line: string) => void,
  format: LineFormat,
  minLevel: Level,
  bindings: Record<string, unknown> = {},
): Logger {
  const min = LEVELS.indexOf(minLevel);
  const at = (level: Level) => (obj: Record<string, unknown>, msg: string) => {
    if (LEVELS.indexOf(level) >= min) write(line(format, level, msg, { ...bindings, ...obj }));
  };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (b) => lineLogger(write, format, minLevel, { ...bindings, ...b }),
  };
}

/** A line logger appending to `file` (synchronously: records are few, and a CLI may exit right after one). */
export function fileLogger(file: string, format: 'json' | 'text', minLevel: Level): Logger {
  return lineLogger((line) => appendFileSync(file, line), format, minLevel);
}
