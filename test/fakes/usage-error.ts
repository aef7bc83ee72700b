import { parseCommandLine, UsageError } from '../../exporter/cli.js';
import { thrownBy } from './errors.js';

/** The UsageError parseCommandLine throws for `argv`; the test fails if it accepts it. */
export const usageError = (argv: readonly string[]): UsageError =>
  thrownBy(
    UsageError,
    () => parseCommandLine(argv),
    `parseCommandLine accepted ${JSON.stringify(argv)}`,
  );
