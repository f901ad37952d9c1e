/*
 * A small Markdown renderer for model answers that builds DOM nodes, never HTML strings.
 *
 * Every piece of the source ends up in a Text node or an attribute value set through the DOM,
 * so raw HTML in an answer shows as text and never runs. Links keep only http, https and mailto
 * targets; anything else (javascript:, data:, relative paths) stays plain text.
 *
 * Supported: paragraphs (single newlines kept as line breaks), ATX headings, fenced code blocks,
 * ordered and unordered lists (nested by indentation), block quotes, rules, inline code,
 * strong, emphasis, strikethrough, links and bare http(s) URLs, backslash escapes.
 */

const SAFE_LINK = /^(https?:\/\/|mailto:)/i;
const SAFE_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const FENCE_END = /^ {0,3}(`{3,}|~{3,})\s*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const BLANK = /^\s*$/;

// Inline syntax, earliest match wins; groups: 1 escape, 2 code run, 3 link text, 4 link url,
// 5 strong, 6 strong, 7 strikethrough, 8 emphasis, 9 emphasis, 10 bare URL.
const INLINE = new RegExp([
  /\\([\\`*_{}[\]()#+\-.!>~|<])/.source,
  /(`+)/.source,
  /\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"\n]*")?\s*\)/.source,
  /\*\*(?=\S)([\s\S]*?\S)\*\*/.source,
  /\b__(?=\S)([\s\S]*?\S)__\b/.source,
  /~~(?=\S)([\s\S]*?\S)~~/.source,
  /\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/.source,
  /\b_(?=[^\s_])([\s\S]*?[^\s_])_\b/.source,
  /(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/.source,
].join('|'), 'g');

function el(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

/** The href for a link target, or null when it is not an absolute http(s)/mailto URL. */
export function safeHref(target) {
  const trimmed = target.trim();
  if (!SAFE_LINK.test(trimmed)) return null;
  try {
    const url = new URL(trimmed);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch (err) {
    return null;
  }
}

function linkNode(href, children) {
  const link = el('a', ...children);
  link.href = href;
  link.target = '_blank';
  link.rel = 'noopener noreferrer';
  return link;
}

// ------------------------------------------------------------------ inline

/** Inline Markdown of `text` as an array of nodes. */
function renderInline(text) {
  const nodes = [];
  let plain = '';
  let index = 0;
  INLINE.lastIndex = 0;
  for (let match = INLINE.exec(text); match; match = INLINE.exec(text)) {
    const start = match.index;
    const rendered = inlineMatch(match, text);
    if (!rendered) {
      INLINE.lastIndex = start + 1; // not syntax here after all: try from the next character
      continue;
    }
    plain += text.slice(index, start);
    if (typeof rendered.node === 'string') {
      plain += rendered.node;
    } else {
      if (plain) nodes.push(document.createTextNode(plain));
      plain = '';
      nodes.push(rendered.node);
    }
    index = rendered.end;
    INLINE.lastIndex = index;
  }
  plain += text.slice(index);
  if (plain) nodes.push(document.createTextNode(plain));
  return nodes;
}

/** One inline match as {node (a Node, or a string of plain text), end}; null when it is not. */
function inlineMatch(match, text) {
  const end = match.index + match[0].length;
  const [, escaped, ticks, linkText, linkTarget, strong1, strong2, strike, em1, em2, bare] = match;
  if (escaped !== undefined) return { node: escaped, end };
  if (ticks !== undefined) return codeSpan(text, match.index, ticks);
  if (linkText !== undefined) {
    const href = safeHref(linkTarget);
    // An unsafe target is not a link: the whole source stays visible as text.
    return { node: href ? linkNode(href, renderInline(linkText)) : match[0], end };
  }
  const recurse = (tag, inner) => ({ node: el(tag, ...renderInline(inner)), end });
  if (strong1 !== undefined || strong2 !== undefined) return recurse('strong', strong1 ?? strong2);
  if (strike !== undefined) return recurse('del', strike);
  if (em1 !== undefined || em2 !== undefined) return recurse('em', em1 ?? em2);
  const href = safeHref(bare);
  return { node: href ? linkNode(href, [bare]) : bare, end };
}

function codeSpan(text, start, ticks) {
  const open = start + ticks.length;
  const close = text.indexOf(ticks, open);
  // An unclosed run (common mid-stream) is literal backticks.
  if (close < 0) return { node: ticks, end: open };
  let code = text.slice(open, close);
  if (/^ .* $/.test(code)) code = code.slice(1, -1);
  return { node: el('code', code), end: close + ticks.length };
}

/** Inline content with single newlines kept as line breaks (chat answers rely on them). */
function inlineWithBreaks(text) {
  const nodes = [];
  text.split('\n').forEach((line, i) => {
    if (i > 0) nodes.push(document.createElement('br'));
    nodes.push(...renderInline(line));
  });
  return nodes;
}

// ------------------------------------------------------------------ blocks

/** Parses `lines` from `start`; returns {node, next} for the block found there. */
function parseBlock(lines, start) {
  const line = lines[start];
  if (FENCE.test(line)) return fencedCode(lines, start);
  const heading = HEADING.exec(line);
  if (heading) return { node: el(`h${heading[1].length}`, ...renderInline(heading[2])), next: start + 1 };
  if (RULE.test(line)) return { node: document.createElement('hr'), next: start + 1 };
  if (QUOTE.test(line)) return blockQuote(lines, start);
  if (LIST_ITEM.test(line)) return list(lines, start);
  return paragraph(lines, start);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || LIST_ITEM.test(line);
}

function fencedCode(lines, start) {
  const [, fence, language] = FENCE.exec(lines[start]);
  let end = start + 1;
  while (end < lines.length && !closesFence(lines[end], fence)) end += 1;
  // Unclosed (still streaming): the block runs to the end of the text.
  const code = el('code', lines.slice(start + 1, end).join('\n'));
  if (language) code.dataset.language = language;
  const pre = el('pre', code);
  pre.className = 'md-code';
  return { node: pre, next: Math.min(end + 1, lines.length) };
}

/** True when `line` ends a code block opened by `fence` (same character, at least as long). */
function closesFence(line, fence) {
  const end = FENCE_END.exec(line);
  return Boolean(end) && end[1][0] === fence[0] && end[1].length >= fence.length;
}

function blockQuote(lines, start) {
  const inner = [];
  let end = start;
  for (; end < lines.length; end += 1) {
    const quoted = QUOTE.exec(lines[end]);
    if (!quoted) break;
    inner.push(quoted[1]);
  }
  return { node: el('blockquote', renderBlocks(inner)), next: end };
}

function paragraph(lines, start) {
  let end = start + 1;
  while (end < lines.length && !BLANK.test(lines[end]) && !startsBlock(lines[end])) end += 1;
  const text = lines.slice(start, end).map((line) => line.trim()).join('\n');
  return { node: el('p', ...inlineWithBreaks(text)), next: end };
}

function list(lines, start) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = document.createElement(ordered ? 'ol' : 'ul');
  const number = parseInt(first[2], 10);
  if (ordered && number !== 1) node.start = number;
  let index = start;
  while (index < lines.length) {
    const item = LIST_ITEM.exec(lines[index]);
    if (!item || item[1].length !== indent || /\d/.test(item[2]) !== ordered) break;
    const { body, next } = listItemLines(lines, index, item[1].length + item[2].length + 1);
    node.append(listItem([item[3], ...body]));
    index = next;
  }
  return { node, next: index };
}

/** The continuation lines of the item at `start` (dedented), and the line after the item. */
function listItemLines(lines, start, contentIndent) {
  const body = [];
  let index = start + 1;
  while (index < lines.length) {
    const line = lines[index];
    const indented = line.length - line.trimStart().length >= Math.min(contentIndent, 2);
    if (BLANK.test(line)) {
      // A blank line belongs to the item only when indented content follows it.
      const following = lines[index + 1];
      if (following === undefined || following.length - following.trimStart().length < 2) break;
    } else if (!indented) {
      break;
    }
    body.push(line.slice(Math.min(contentIndent, line.length - line.trimStart().length)));
    index += 1;
  }
  return { body, next: index };
}

function listItem(itemLines) {
  const li = document.createElement('li');
  const blocks = renderBlocks(itemLines);
  // The item's first paragraph is its text, shown without paragraph margins.
  const first = blocks.firstChild;
  if (first && first.nodeName === 'P') {
    li.append(...first.childNodes);
    first.remove();
  }
  li.append(blocks);
  return li;
}

/** Renders lines of Markdown into a DocumentFragment. */
function renderBlocks(lines) {
  const fragment = document.createDocumentFragment();
  let index = 0;
  while (index < lines.length) {
    if (BLANK.test(lines[index])) {
      index += 1;
      continue;
    }
    const { node, next } = parseBlock(lines, index);
    fragment.append(node);
    index = next;
  }
  return fragment;
}

/** Renders Markdown `text` into a DocumentFragment of safe DOM nodes. */
export function renderMarkdown(text) {
  return renderBlocks(text.replace(/\r\n?/g, '\n').split('\n'));
}

// ------------------------------------------------------------------ streaming

/**
 * The end of the longest prefix of `text` made of finished blocks: a blank line outside any
 * code fence, not followed by a list item or indented line (which may continue a block above).
 */
export function stableLength(text, from) {
  let stable = from;
  let openFence = null; // the fence of the code block the line is in
  let offset = from;
  const lines = text.slice(from).split('\n');
  for (let i = 0; i < lines.length - 1; i += 1) {
    const line = lines[i];
    offset += line.length + 1;
    if (openFence !== null) {
      if (closesFence(line, openFence)) openFence = null;
    } else if (FENCE.test(line)) {
      openFence = FENCE.exec(line)[1];
    } else if (BLANK.test(line) && i + 1 < lines.length - 1) {
      const next = lines[i + 1];
      if (!LIST_ITEM.test(next) && !/^\s/.test(next)) stable = offset;
    }
  }
  return stable;
}

/**
 * Markdown shown while it streams in: finished blocks are rendered once and kept; only the
 * unfinished tail is rendered again, at most once per animation frame. Cost stays linear in
 * the answer's length and the finished part never flickers.
 */
export class MarkdownStream {
  constructor(container) {
    this.container = container;
    this.text = '';
    this.stable = 0; // length of `text` rendered for good
    this.tailNodes = [];
    this.frame = 0;
  }

  /** Adds streamed text; the page shows it at the next animation frame. */
  append(delta, onRender) {
    this.text += delta;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
      if (onRender) onRender();
    });
  }

  /** Shows `text` as the whole answer now (the final text, or a stored one). */
  finish(text) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (typeof text === 'string' && text !== this.text) {
      // The final text is not an extension of what streamed: render it all again.
      this.container.replaceChildren();
      this.tailNodes = [];
      this.stable = 0;
      this.text = text;
    }
    this.render(true);
  }

  render(final = false) {
    const stable = final ? this.text.length : stableLength(this.text, this.stable);
    for (const node of this.tailNodes) node.remove();
    if (stable > this.stable) {
      this.container.append(renderMarkdown(this.text.slice(this.stable, stable)));
      this.stable = stable;
    }
    const tail = renderMarkdown(this.text.slice(this.stable));
    this.tailNodes = Array.from(tail.childNodes);
    this.container.append(tail);
  }
}
