/**
 * PromQL words that are not series names: operators, modifiers and literals, as the rules and
 * dashboards tests tell a metric name from the rest of an expression.
 */
export const PROMQL_KEYWORDS: ReadonlySet<string> = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'offset',
  'inf',
  'nan',
]);
