/**
 * The parsing that request parameters and settings share: bounded whole numbers, and Autopilot's
 * "None" for an absent selector. Pure and free of error types, so the API (ParamError, a 400) and
 * the configuration (ConfigError, exit 2) each refuse in their own way with the same words.
 */

/** Pure: `text` as a whole number from min to max (digits only: no sign, point or exponent). */
export function boundedInteger(text: string, min: number, max: number): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const number = Number(text);
  return number < min || number > max ? undefined : number;
}

/** What a bounded whole number accepts, as settings and parameters say it. */
export function wholeNumberRange(min: number, max: number): string {
  return `a whole number from ${min} to ${max}`;
}

/** The refusal of a request parameter that is not a whole number within bounds. */
export function notWholeNumber(name: string, value: string, min: number, max: number): string {
  return `${name} ${JSON.stringify(value)} is not ${wholeNumberRange(min, max)}`;
}

/**
 * Pure: a selector parameter, or undefined when absent. Autopilot's clients send the string "None"
 * (Python's spelling of no value) for a selector they do not set, and an empty value means the same.
 */
export function givenSelector(value: string | undefined): string | undefined {
  return value === undefined || value === '' || value === 'None' ? undefined : value;
}
