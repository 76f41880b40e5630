import { VmcError } from '../../errors.js';
import type { Clock } from '../../platform/clock.js';
import type { Qmp } from './qmp-commands.js';

/**
 * Save and load of a VM's device state for templating, by QEMU migration to and from a file. Both sides set
 * `x-ignore-shared`: guest RAM, in a shared memory file, is not copied; only the device state is (tens of KiB).
 * The capability can only be set over QMP in QEMU 7.2, hence `-incoming defer` on the loading side.
 */

/** Saves the device state of a paused VM to `statePath`. */
export async function saveState(qmp: Qmp, statePath: string, clock: Clock): Promise<void> {
  await ignoreShared(qmp);
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(statePath)}` });
  await waitMigration(qmp, clock);
}

/** Loads a saved device state into a QEMU started with `-incoming defer`. */
export async function loadState(qmp: Qmp, statePath: string, clock: Clock): Promise<void> {
  await ignoreShared(qmp);
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(statePath)}` });
  await waitMigration(qmp, clock);
}

async function ignoreShared(qmp: Qmp): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: true }],
  });
}

/** Polls `query-migrate` until the migration completes; fails with QEMU's error otherwise. */
async function waitMigration(qmp: Qmp, clock: Clock, timeoutMs = 60_000): Promise<void> {
  const deadline = clock.monotonic() + timeoutMs;
  for (;;) {
    const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
    if (m.status === 'completed') return;
    if (m.status === 'failed' || m.status === 'cancelled') {
      throw new VmcError(
        'VMC_ERR_TEMPLATE_FAILED',
        `migration ${m.status}: ${m['error-desc'] ?? 'no detail'}`,
      );
    }
    if (clock.monotonic() > deadline)
      throw new VmcError(
        'VMC_ERR_TEMPLATE_FAILED',
        `migration not complete after ${timeoutMs} ms (${m.status})`,
      );
    // Saving or loading a template takes 30–60 ms under TCG (research §5): poll often.
    await clock.sleep(5);
  }
}

/** Quotes a path for QEMU's `exec:` migration URIs (run by /bin/sh). */
export function shellQuote(p: string): string {
  return `'${p.replace(/'/g, `'\\''`)}'`;
}
