/** Test helper for synchronous throws: the error `f` throws (fails the test when it returns normally). */
export function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}
