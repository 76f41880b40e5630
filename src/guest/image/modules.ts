/**
 * Kernel module selection: the modules the guest needs, closed over their dependencies from `modules.dep`
 * and ordered so that every module comes after what it depends on (e.g. virtio_ring before virtio).
 */

/** Modules the guest loads at boot, by name. Their dependencies are added automatically. */
export const GUEST_MODULES = [
  'virtio_pci', // the PCI transport every virtio device sits on (q35)
  'virtio_blk', // the read-only root disk
  'virtio_console', // the agent's virtio-serial port
  'ext4', // the root disk's file system (a module in Debian's generic kernel)
  'crc32c_generic', // ext4 metadata checksums (mkfs.ext4 enables metadata_csum)
  '9pnet_virtio', // the per-VM shared directory
  '9p',
  'virtio_mem', // memory hot-plug
  'virtio_net', // pod networking (hot-plugged NICs)
  'virtio_rng',
] as const;

/** Parsed `modules.dep`: module name → { path relative to the modules dir, dependency names }. */
type ModuleTable = Map<string, { path: string; deps: string[] }>;

/** Module name from a path: `kernel/drivers/virtio/virtio_ring.ko` → `virtio_ring` (dashes and underscores equal). */
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1).replace(/\.ko(\.[a-z]+)?$/, '');
  return base.replace(/-/g, '_');
}

/** Parses the text of `modules.dep` (`path: dep-path dep-path ...`). */
export function parseModulesDep(text: string): ModuleTable {
  const table: ModuleTable = new Map();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(moduleName);
    table.set(moduleName(path), { path, deps });
  }
  return table;
}

/**
 * Returns the load order for `wanted` and everything it depends on. Modules built into the kernel (listed in
 * `builtin`) are skipped. Throws naming the module when one is neither a module nor built in.
 */
export function resolveLoadOrder(
  table: ModuleTable,
  wanted: readonly string[],
  builtin: ReadonlySet<string> = new Set(),
): Array<{ name: string; path: string }> {
  const order: Array<{ name: string; path: string }> = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (raw: string, via: string[]) => {
    const name = raw.replace(/-/g, '_');
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting')
      throw new Error(`module dependency cycle: ${[...via, name].join(' -> ')}`);
    const entry = table.get(name);
    if (!entry) {
      if (builtin.has(name)) return;
      throw new Error(
        `kernel module ${name} not found in modules.dep${via.length ? ` (needed by ${via.join(' -> ')})` : ''}`,
      );
    }
    state.set(name, 'visiting');
    for (const d of entry.deps) visit(d, [...via, name]);
    state.set(name, 'done');
    order.push({ name, path: entry.path });
  };
  for (const w of wanted) visit(w, []);
  return order;
}

/** Parses `modules.builtin` into a set of names. */
export function parseBuiltin(text: string): Set<string> {
  return new Set(text.split('\n').filter(Boolean).map(moduleName));
}
