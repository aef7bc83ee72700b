/**
 * The error of class `type` that `action` throws, for tests that read its fields. Another error is
 * thrown on, and no error at all fails the test with `accepted`, which says what was accepted.
 */
export function thrownBy<E extends Error>(
  type: abstract new (...args: never[]) => E,
  action: () => unknown,
  accepted: string,
): E {
  try {
    action();
  } catch (error) {
    if (error instanceof type) return error;
    throw error;
  }
  throw new Error(accepted);
}
