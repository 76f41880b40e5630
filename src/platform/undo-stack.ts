/**
 * Cleanup on failure, in reverse order of set-up. `push` after each step that needs undoing; on error call
 * `unwind()` before rethrowing; on success call `release()` to keep what was built.
 */
export class UndoStack {
  #steps: Array<{ name: string; fn: () => unknown }> = [];

  /** Registers an undo step. */
  push(name: string, fn: () => unknown): void {
    this.#steps.push({ name, fn });
  }

  /** Forgets every step (the work succeeded and is now owned by someone else). */
  release(): void {
    this.#steps = [];
  }

  /** Runs every step, last first. Failures of individual steps are collected, never thrown. */
  async unwind(): Promise<Array<{ name: string; error: unknown }>> {
    const failures: Array<{ name: string; error: unknown }> = [];
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      try {
        await step.fn();
      } catch (error) {
        failures.push({ name: step.name, error });
      }
    }
    return failures;
  }
}
