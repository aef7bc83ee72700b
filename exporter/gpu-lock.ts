/**
 * GpuLock: GPU checks share the GPUs with each other; an exclusive check holds them alone.
 * Waiters are served in arrival order, so a steady stream of light checks cannot starve an
 * exclusive one. Acquisition is abortable: a run that times out while waiting leaves the queue.
 */

export type Release = () => void;

export interface GpuLock {
  acquire(mode: 'shared' | 'exclusive', signal: AbortSignal): Promise<Release>;
  /** Number of holders and whether the holder is exclusive, for status reports and tests. */
  holders(): { readonly count: number; readonly exclusive: boolean };
}

interface Waiter {
  readonly mode: 'shared' | 'exclusive';
  readonly grant: () => void;
}

export interface GpuLockOptions {
  /** Told when an exclusive holder takes or gives back the GPUs (the node label shows TESTING). */
  readonly onExclusiveChange?: (held: boolean) => void;
}

export function createGpuLock(options: GpuLockOptions = {}): GpuLock {
  let sharedHolders = 0;
  let exclusiveHeld = false;
  const queue: Waiter[] = [];

  const canGrant = (mode: 'shared' | 'exclusive'): boolean =>
    mode === 'shared' ? !exclusiveHeld : !exclusiveHeld && sharedHolders === 0;

  const pump = (): void => {
    while (queue.length > 0 && canGrant(queue[0]!.mode)) queue.shift()!.grant();
  };

  return {
    acquire(mode, signal) {
      return new Promise<Release>((resolve, reject) => {
        if (signal.aborted) {
          reject(abortReason(signal));
          return;
        }
        let released = false;
        const release: Release = () => {
          if (released) return;
          released = true;
          if (mode === 'shared') sharedHolders -= 1;
          else {
            exclusiveHeld = false;
            options.onExclusiveChange?.(false);
          }
          pump();
        };
        const waiter: Waiter = {
          mode,
          grant: () => {
            signal.removeEventListener('abort', onAbort);
            if (mode === 'shared') sharedHolders += 1;
            else {
              exclusiveHeld = true;
              options.onExclusiveChange?.(true);
            }
            resolve(release);
          },
        };
        const onAbort = (): void => {
          const index = queue.indexOf(waiter);
          if (index >= 0) queue.splice(index, 1);
          reject(abortReason(signal));
          pump();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        queue.push(waiter);
        pump();
      });
    },
    holders: () => ({ count: exclusiveHeld ? 1 : sharedHolders, exclusive: exclusiveHeld }),
  };
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('aborted');
}
