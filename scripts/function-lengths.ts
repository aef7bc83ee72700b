/**
 * Prints the longest functions under exporter/ by their own length in lines: a function's line span
 * minus the spans of the functions directly inside it, so that a factory returning an object of
 * methods is measured by its own wiring, not by its methods (each is measured on its own). Every
 * kind of function counts: declarations, function expressions, arrow functions, methods,
 * constructors and accessors. A nested function that starts and ends on one line stays in its
 * parent: it is an expression on one of the parent's lines. The project's rule is no function over
 * about 80 lines of its own (issue 16); this prints the figures, it does not enforce them.
 *
 * Run with `npm run functions` (built into dist/ with the project's tsc: Node 20 cannot strip types).
 * Arguments: the folder to scan (exporter) and how many to print (15).
 */

import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';

export interface FunctionLength {
  /**
   * Where it is declared or assigned (createApiApp, Foo.bar, peers for an arrow in a const), or the
   * call it is a callback of (router.all('/status') callback).
   */
  readonly name: string;
  /** 1-based line of its first line. */
  readonly line: number;
  /** Its whole span, nested functions included. */
  readonly totalLines: number;
  /** The span less the spans of the multi-line functions directly inside it. */
  readonly ownLines: number;
}

type FunctionNode = ts.SignatureDeclaration & { readonly body?: ts.Node | undefined };

function isFunction(node: ts.Node): node is FunctionNode {
  return (
    ts.isFunctionDeclaration(node) ||
    ts.isFunctionExpression(node) ||
    ts.isArrowFunction(node) ||
    ts.isMethodDeclaration(node) ||
    ts.isConstructorDeclaration(node) ||
    ts.isGetAccessorDeclaration(node) ||
    ts.isSetAccessorDeclaration(node)
  );
}

/** The name a reader would look for: its own, or that of what it is assigned to. */
function nameOf(node: FunctionNode): string {
  const own = node.name;
  const parent = node.parent;
  const className =
    ts.isClassLike(parent) && parent.name !== undefined ? `${parent.name.text}.` : '';
  if (ts.isConstructorDeclaration(node)) return `${className}constructor`;
  if (own !== undefined && !ts.isComputedPropertyName(own)) return `${className}${own.text}`;
  if (
    (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent)) &&
    ts.isIdentifier(parent.name)
  ) {
    return parent.name.text;
  }
  // A callback is known by the call it is given to: router.all('/status') callback.
  if (ts.isCallExpression(parent)) {
    const first = parent.arguments[0];
    const literal = first !== undefined && ts.isStringLiteral(first) ? `'${first.text}'` : '…';
    return `${parent.expression.getText()}(${literal}) callback`;
  }
  return '<anonymous>';
}

/** Pure: every function of one source text with its total and own length. */
export function functionLengths(fileName: string, text: string): FunctionLength[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true);
  const lineOf = (position: number): number =>
    source.getLineAndCharacterOfPosition(position).line + 1;
  const found: FunctionLength[] = [];
  /** Returns the lines the functions found under `node` take from their enclosing function. */
  const visit = (node: ts.Node): number => {
    if (!isFunction(node)) {
      let nested = 0;
      node.forEachChild((child) => {
        nested += visit(child);
      });
      return nested;
    }
    const first = lineOf(node.getStart(source));
    const totalLines = lineOf(node.getEnd()) - first + 1;
    let nested = 0;
    node.forEachChild((child) => {
      nested += visit(child);
    });
    found.push({ name: nameOf(node), line: first, totalLines, ownLines: totalLines - nested });
    return totalLines > 1 ? totalLines : 0;
  };
  visit(source);
  return found;
}

function typeScriptFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return typeScriptFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

function main(argv: readonly string[]): void {
  const directory = argv[0] ?? 'exporter';
  const count = Number(argv[1] ?? '15');
  const all = typeScriptFiles(directory).flatMap((path) =>
    functionLengths(path, readFileSync(path, 'utf8')).map((f) => ({
      ...f,
      where: `${relative(process.cwd(), path)}:${f.line}`,
    })),
  );
  all.sort((a, b) => b.ownLines - a.ownLines || a.where.localeCompare(b.where));
  console.log(`own  total  function (${all.length} functions under ${directory}/)`);
  for (const f of all.slice(0, count)) {
    console.log(
      `${String(f.ownLines).padStart(4)}  ${String(f.totalLines).padStart(5)}  ${f.name} (${f.where})`,
    );
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2));
}
