"""The page's Markdown renderer (app/static/markdown.js), run in Chromium on the page's origin."""

from __future__ import annotations

from playwright.async_api import Page

from tests.page.conftest import PAGE_LOOP
from tests.support.server import RunningServer

pytestmark = PAGE_LOOP

# Markdown in, the HTML that the DOM nodes built from it serialize to.
CASES = [
    (
        "plain *em* **strong** ~~del~~ `co*de*`",
        "<p>plain <em>em</em> <strong>strong</strong> <del>del</del> <code>co*de*</code></p>",
    ),
    ("line one\nline two", "<p>line one<br>line two</p>"),
    ("# Title\n\ntext", "<h1>Title</h1><p>text</p>"),
    ("- a\n  - b\n- c", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>"),
    ("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>'),
    (
        "```js\nlet a = '<b>';\n\nb();\n```",
        '<pre class="md-code"><code data-language="js">let a = \'&lt;b&gt;\';\n\nb();</code></pre>',
    ),
    (
        "```\nunclosed while streaming",
        '<pre class="md-code"><code>unclosed while streaming</code></pre>',
    ),
    ("> quoted", "<blockquote><p>quoted</p></blockquote>"),
    (
        "see https://example.com/a.",
        '<p>see <a href="https://example.com/a" target="_blank" rel="noopener noreferrer">'
        "https://example.com/a</a>.</p>",
    ),
    (
        "[x](mailto:a@example.com)",
        '<p><a href="mailto:a@example.com" target="_blank" rel="noopener noreferrer">x</a></p>',
    ),
    (
        "[x](javascript:alert(1)) [y](/relative) [z](data:text/html,hi)",
        "<p>[x](javascript:alert(1)) [y](/relative) [z](data:text/html,hi)</p>",
    ),
    (
        "<script>alert(1)</script> \\*not em\\*",
        "<p>&lt;script&gt;alert(1)&lt;/script&gt; *not em*</p>",
    ),
    ("a `unclosed code", "<p>a `unclosed code</p>"),
]

STREAMED = """# Plan

Some *text* that goes on.

1. one
2. two

   still two

- x
- y

```py
x = 1

y = "<i>"
```

> done [link](https://example.com)
"""

RENDER_CASES = """async (cases) => {
    const { renderMarkdown } = await import('/static/markdown.js');
    return cases.map(([source]) => {
        const box = document.createElement('div');
        box.append(renderMarkdown(source));
        return box.innerHTML;
    });
}"""

# Feeds the text in small pieces, rendering after each as the page does at animation frames,
# and returns what the finished stream shows next to a render of the whole text at once.
RENDER_STREAMED = """async (text) => {
    const { renderMarkdown, MarkdownStream } = await import('/static/markdown.js');
    const streamed = document.createElement('div');
    const view = new MarkdownStream(streamed);
    for (let i = 0; i < text.length; i += 3) {
        view.text += text.slice(i, i + 3);
        view.render();
    }
    view.finish(text);
    const whole = document.createElement('div');
    whole.append(renderMarkdown(text));
    return [streamed.innerHTML, whole.innerHTML];
}"""


async def test_markdown_becomes_safe_elements(page: Page, server: RunningServer) -> None:
    await page.goto(server.http_url)
    rendered = await page.evaluate(RENDER_CASES, CASES)
    for (source, expected), html in zip(CASES, rendered, strict=True):
        assert html == expected, f"{source!r}"


async def test_streamed_markdown_ends_as_a_whole_render(page: Page, server: RunningServer) -> None:
    await page.goto(server.http_url)
    streamed, whole = await page.evaluate(RENDER_STREAMED, STREAMED)
    assert streamed == whole
    assert whole.count("<ol>") == 1  # the loose list stayed one list
    assert "&lt;i&gt;" in whole
