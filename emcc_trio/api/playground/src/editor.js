// The playground's editor: CodeMirror 6 with C and C++ highlighting, line marks for the
// compiler's diagnostics, and a small API on window.EmccEditor for playground.js.
// Built into ../static/editor.js by build.mjs (npm run build); the bundle is committed.
import { EditorView, basicSetup } from "codemirror";
import { cpp } from "@codemirror/lang-cpp";
import { Compartment, EditorSelection, RangeSetBuilder, StateEffect, StateField } from "@codemirror/state";
import { Decoration, GutterMarker, gutter } from "@codemirror/view";
import { setDiagnostics } from "@codemirror/lint";

// Diagnostics are {line, col, severity: "error"|"warning"|"note", message}, lines from 1.
const setMarks = StateEffect.define();

const lineClass = {
  error: Decoration.line({ class: "cm-errorLine" }),
  warning: Decoration.line({ class: "cm-warningLine" }),
};

function worst(a, b) {
  return a === "error" || b === "error" ? "error" : "warning";
}

// line number -> "error" | "warning", kept in the state so edits do not lose the marks' lines.
const marksField = StateField.define({
  create: () => new Map(),
  update(marks, tr) {
    for (const effect of tr.effects) if (effect.is(setMarks)) return effect.value;
    return marks;
  },
});

const lineMarks = EditorView.decorations.compute([marksField, "doc"], (state) => {
  const marks = state.field(marksField);
  const builder = new RangeSetBuilder();
  const lines = [...marks.keys()].filter((n) => n >= 1 && n <= state.doc.lines).sort((a, b) => a - b);
  for (const n of lines) builder.add(state.doc.line(n).from, state.doc.line(n).from, lineClass[marks.get(n)]);
  return builder.finish();
});

class MarkGutter extends GutterMarker {
  constructor(severity) {
    super();
    this.severity = severity;
  }
  eq(other) {
    return other.severity === this.severity;
  }
  toDOM() {
    const span = document.createElement("span");
    span.className = `cm-markGutter-${this.severity}`;
    span.textContent = this.severity === "error" ? "●" : "▲";
    span.title = this.severity;
    return span;
  }
}

const markGutter = gutter({
  class: "cm-markGutter",
  lineMarker(view, line) {
    const n = view.state.doc.lineAt(line.from).number;
    const severity = view.state.field(marksField).get(n);
    return severity ? new MarkGutter(severity) : null;
  },
  lineMarkerChange: (update) => update.transactions.some((tr) => tr.effects.some((e) => e.is(setMarks))),
});

const theme = EditorView.theme({
  "&": { height: "100%", fontSize: "14px" },
  ".cm-scroller": { fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" },
  ".cm-errorLine": { backgroundColor: "rgba(220, 38, 38, 0.14)" },
  ".cm-warningLine": { backgroundColor: "rgba(217, 119, 6, 0.13)" },
  ".cm-markGutter": { width: "1.1em", textAlign: "center" },
  ".cm-markGutter-error": { color: "#dc2626" },
  ".cm-markGutter-warning": { color: "#d97706" },
});

export function create(parent, { doc = "", onChange = null } = {}) {
  const language = new Compartment();
  const view = new EditorView({
    parent,
    doc,
    extensions: [
      basicSetup,
      language.of(cpp()),
      marksField,
      lineMarks,
      markGutter,
      theme,
      EditorView.updateListener.of((update) => {
        if (update.docChanged && onChange) onChange(view);
      }),
    ],
  });

  return {
    view,
    getCode: () => view.state.doc.toString(),
    setCode(code) {
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: code },
        effects: setMarks.of(new Map()),
      });
      view.dispatch(setDiagnostics(view.state, []));
    },
    // Mark the diagnostics' lines and underline their columns (CodeMirror's lint layer).
    mark(diagnostics) {
      const marks = new Map();
      const lint = [];
      const doc = view.state.doc;
      for (const d of diagnostics) {
        if (d.severity !== "error" && d.severity !== "warning") continue;
        if (d.line < 1 || d.line > doc.lines) continue;
        marks.set(d.line, marks.has(d.line) ? worst(marks.get(d.line), d.severity) : d.severity);
        const line = doc.line(d.line);
        const from = Math.min(line.from + Math.max(d.col - 1, 0), line.to);
        lint.push({ from, to: Math.min(from + 1, line.to), severity: d.severity, message: d.message });
      }
      view.dispatch({ effects: setMarks.of(marks) });
      view.dispatch(setDiagnostics(view.state, lint));
    },
    markedLines() {
      return [...view.state.field(marksField).entries()].sort((a, b) => a[0] - b[0]);
    },
    // Put the cursor at line:col (1-based), scroll it into view and focus the editor.
    goTo(lineNumber, col = 1) {
      const doc = view.state.doc;
      const line = doc.line(Math.min(Math.max(lineNumber, 1), doc.lines));
      const pos = Math.min(line.from + Math.max(col - 1, 0), line.to);
      view.dispatch({
        selection: EditorSelection.cursor(pos),
        effects: EditorView.scrollIntoView(pos, { y: "center" }),
      });
      view.focus();
    },
    cursorLine: () => view.state.doc.lineAt(view.state.selection.main.head).number,
  };
}
