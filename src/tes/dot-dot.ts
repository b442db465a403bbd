/**
 * Whether a path or URL has a `..` segment as the client wrote it, percent-encoded (`%2e%2e`) or not.
 * The URL parser folds such segments away before a pathname is seen, so checks look at the text.
 */
export function hasDotDotSegment(text: string): boolean {
  return segmentsOf(text).includes('..') || segmentsOf(decodedOrAsIs(text)).includes('..');
}

function segmentsOf(text: string): string[] {
  return text.split(/[/\\]/);
}

function decodedOrAsIs(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
