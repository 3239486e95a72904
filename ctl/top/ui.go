package top

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"

	"github.com/snoopd/snoopd/ctl/format"
	"github.com/snoopd/snoopd/ctl/sessions"
)

// Options configure the live view.
type Options struct {
	// Delay is the time between refreshes.
	Delay time.Duration
	// Timeout bounds each poll (0: none).
	Timeout time.Duration
	// NoColor draws without colour (NO_COLOR); bold and reverse video
	// stay, as no-color.org allows.
	NoColor bool
	// In and Out are the terminal.
	In  io.Reader
	Out io.Writer
	// Sessions, when set, gives the sessions view (key s); with
	// ShowSessions top starts in it.
	Sessions     SessionSource
	ShowSessions bool
}

// Run shows the live view until q, Ctrl-C, ctx's end or a failed poll.
// The terminal is restored before Run returns on every one of these
// paths; a failed poll is returned for the caller to print then.
func Run(ctx context.Context, src Source, o Options) error {
	m := &model{src: src, delay: o.Delay, timeout: o.Timeout, sortCol: defaultSort, desc: true, width: 80, height: 24,
		sessSrc: o.Sessions, showSessions: o.ShowSessions && o.Sessions != nil}
	// Signals are left to the caller, who ends ctx on SIGINT and SIGTERM:
	// bubbletea's own handler would kill the program on SIGINT, which
	// skips leaving the alternate screen.
	opts := []tea.ProgramOption{tea.WithInput(o.In), tea.WithOutput(o.Out), tea.WithoutSignalHandler()}
	if o.NoColor {
		opts = append(opts, tea.WithColorProfile(colorprofile.Ascii))
	}
	prog := tea.NewProgram(m, opts...)
	// The end of ctx (SIGINT or SIGTERM to snoopctl) quits as q does;
	// handing ctx to bubbletea instead would kill the program, with the
	// same result as its signal handler.
	stop := context.AfterFunc(ctx, prog.Quit)
	defer stop()
	final, err := prog.Run()
	if err != nil {
		return fmt.Errorf("terminal: %w", err)
	}
	return final.(*model).err
}

// Messages of the live view.
type (
	// snapMsg is a finished poll: a snapshot, and in the sessions view
	// the sessions of the interval.
	snapMsg struct {
		snap *Snapshot
		err  error
		// polledSessions says sess and sessErr are set.
		polledSessions bool
		sess           *sessions.Table
		sessErr        error
	}
	// tickMsg asks for the next poll.
	tickMsg struct{}
)

// model is the live view's state.
type model struct {
	src     Source
	delay   time.Duration
	timeout time.Duration

	prev  *Snapshot
	frame *Frame
	err   error

	sortCol   int
	desc      bool
	filter    string
	filtering bool   // typing a filter
	cursor    string // key (Row.Key) of the selected proxy
	offset    int    // first row shown
	detail    string // the proxy opened with enter, "" for the table
	paused    bool
	help      bool
	polling   bool

	sessSrc      SessionSource
	showSessions bool            // the sessions view is shown
	sess         *sessions.Table // the last interval's sessions
	sessErr      error           // why the sessions could not be counted

	width, height int
}

func (m *model) Init() tea.Cmd { return m.poll() }

// poll asks the source for a snapshot off the UI goroutine.
func (m *model) poll() tea.Cmd {
	m.polling = true
	src, timeout := m.src, m.timeout
	var sessSrc SessionSource
	if m.showSessions {
		sessSrc = m.sessSrc
	}
	return func() tea.Msg {
		ctx, cancel := context.Background(), func() {}
		if timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, timeout)
		}
		defer cancel()
		s, err := src.Snapshot(ctx)
		msg := snapMsg{snap: s, err: err}
		if sessSrc != nil && err == nil {
			msg.polledSessions = true
			msg.sess, msg.sessErr = sessSrc.Sessions(ctx)
		}
		return msg
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case snapMsg:
		m.polling = false
		if msg.err != nil {
			m.err = msg.err
			return m, tea.Quit
		}
		m.frame = NewFrame(m.prev, msg.snap)
		m.prev = msg.snap
		if msg.polledSessions {
			m.sessErr = msg.sessErr
			if msg.sessErr == nil {
				m.sess = msg.sess
			}
		}
		return m, tea.Tick(m.delay, func(time.Time) tea.Msg { return tickMsg{} })
	case tickMsg:
		if m.paused {
			return m, nil // resuming polls at once
		}
		return m, m.poll()
	case tea.KeyPressMsg:
		return m, m.key(msg)
	}
	return m, nil
}

// key handles one key press.
func (m *model) key(k tea.KeyPressMsg) tea.Cmd {
	s := k.String()
	if s == "ctrl+c" {
		return tea.Quit
	}
	if m.filtering {
		switch s {
		case "enter", "esc":
			if s == "esc" {
				m.filter = ""
			}
			m.filtering = false
		case "backspace":
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		default:
			if k.Text != "" {
				m.filter += k.Text
			}
		}
		m.offset = 0
		return nil
	}
	if m.help {
		m.help = false
		if s != "q" {
			return nil
		}
	}
	switch s {
	case "q":
		return tea.Quit
	case "?":
		m.help = true
	case "p", "space":
		m.paused = !m.paused
		if !m.paused && !m.polling {
			return m.poll()
		}
	case "s":
		// The sessions view and back; its first table comes with the
		// next refresh, which starts the count.
		if m.sessSrc != nil {
			m.showSessions, m.detail = !m.showSessions, ""
		}
		return nil
	case "esc", "backspace", "left":
		if m.showSessions {
			m.showSessions = false
			return nil
		}
		if m.detail != "" {
			m.detail = ""
		} else if m.filter != "" && s == "esc" {
			m.filter = ""
		}
	}
	if m.detail != "" || m.showSessions {
		return nil
	}
	rows := m.rows()
	switch s {
	case "/":
		m.filtering = true
	case "enter", "right":
		if m.cursor != "" {
			m.detail = m.cursor
		}
	case "up", "k":
		m.move(rows, -1)
	case "down", "j":
		m.move(rows, 1)
	case "pgup":
		m.move(rows, -m.tableHeight())
	case "pgdown":
		m.move(rows, m.tableHeight())
	case "home", "g":
		m.move(rows, -len(rows))
	case "end", "G":
		m.move(rows, len(rows))
	case "<":
		m.sortBy(m.nextSort(-1))
	case ">":
		m.sortBy(m.nextSort(1))
	case "r":
		m.desc = !m.desc
	default:
		for i, c := range columns {
			if c.key != "" && s == c.key {
				if i == m.sortCol {
					m.desc = !m.desc
				} else {
					m.sortBy(i)
				}
			}
		}
	}
	return nil
}

// sortBy sorts by column i: names and states ascending, numbers
// descending, as people look for the first name or the busiest proxy.
func (m *model) sortBy(i int) {
	m.sortCol, m.desc = i, columns[i].right
}

// nextSort is the sort column step columns to the left or right (-1, 1)
// of the current one: the columns with a key, round.
func (m *model) nextSort(step int) int {
	i := m.sortCol
	for {
		i = (i + step + len(columns)) % len(columns)
		if columns[i].key != "" {
			return i
		}
	}
}

// rows are the rows shown: filtered and sorted.
func (m *model) rows() []Row {
	if m.frame == nil {
		return nil
	}
	rows := FilterRows(append([]Row(nil), m.frame.Rows...), m.filter)
	SortRows(rows, m.sortCol, m.desc)
	return rows
}

// move moves the selection by n rows.
func (m *model) move(rows []Row, n int) {
	if len(rows) == 0 {
		return
	}
	i := m.selected(rows)
	i = min(max(i+n, 0), len(rows)-1)
	m.cursor = rows[i].Key()
}

// selected is the index of the selected row, which follows its proxy
// through refreshes and re-sorts; the first row when it is gone.
func (m *model) selected(rows []Row) int {
	for i, r := range rows {
		if r.Key() == m.cursor {
			return i
		}
	}
	return 0
}

// tableHeight is the number of proxy rows that fit.
func (m *model) tableHeight() int {
	head := 2
	if m.frame != nil {
		head = len(summary(m.frame))
	}
	return max(m.height-head-3, 1) // the header lines, a blank, the titles, the status line
}

// Styles of the live view. Colour is used sparingly, for states and
// errors; NO_COLOR leaves bold and reverse video.
var (
	titleStyle  = lipgloss.NewStyle().Bold(true)
	headerStyle = lipgloss.NewStyle().Reverse(true)
	cursorStyle = lipgloss.NewStyle().Reverse(true).Bold(true)
	badStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
	dimStyle    = lipgloss.NewStyle().Faint(true)
)

func (m *model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	v.WindowTitle = "snoopctl top"
	return v
}

// render draws the screen: each line cut to the width, the lines cut to
// the height.
func (m *model) render() string {
	var lines []string
	switch {
	case m.frame == nil:
		lines = []string{"snoopctl top: waiting for the first poll..."}
	case m.help:
		lines = m.helpLines()
	case m.showSessions:
		lines = m.sessionLines()
	case m.detail != "":
		lines = m.detailLines()
	default:
		lines = m.tableLines()
	}
	for len(lines) < m.height-1 {
		lines = append(lines, "")
	}
	lines = append(lines[:max(m.height-1, 0)], m.status())
	for i, l := range lines {
		lines[i] = ansi.Truncate(l, m.width, "")
	}
	return strings.Join(lines, "\n")
}

func (m *model) header() []string {
	lines := summary(m.frame)
	if m.paused {
		lines[0] += "  [paused]"
	}
	lines[0] = titleStyle.Render(lines[0])
	for i := 2; i < len(lines); i++ {
		lines[i] = badStyle.Render(lines[i]) // the source's problems
	}
	return lines
}

func (m *model) tableLines() []string {
	rows := m.rows()
	lines := m.header()
	header, body := tableLines(rows, m.sortCol, m.desc, m.frame.fleet())
	lines = append(lines, "", headerStyle.Render(pad(header, m.width)))
	if len(rows) == 0 {
		msg := "(no proxies)"
		if m.filter != "" {
			msg = fmt.Sprintf("(no proxy name contains %q)", m.filter)
		}
		return append(lines, dimStyle.Render(msg))
	}
	sel := m.selected(rows)
	if m.cursor == "" || rows[sel].Key() != m.cursor {
		m.cursor = rows[sel].Key()
	}
	h := m.tableHeight()
	// Keep the selection in view.
	if sel < m.offset {
		m.offset = sel
	}
	if sel >= m.offset+h {
		m.offset = sel - h + 1
	}
	m.offset = min(m.offset, max(len(rows)-h, 0))
	for i := m.offset; i < len(rows) && i < m.offset+h; i++ {
		l := body[i]
		switch {
		case i == sel:
			l = cursorStyle.Render(pad(l, m.width))
		case rows[i].State == "failed" || rows[i].Errors > 0:
			l = badStyle.Render(l)
		}
		lines = append(lines, l)
	}
	return lines
}

// detailLines show one proxy: its row, its operations and its latency
// histogram over the interval.
func (m *model) detailLines() []string {
	var r *Row
	for i := range m.frame.Rows {
		if m.frame.Rows[i].Key() == m.detail {
			r = &m.frame.Rows[i]
		}
	}
	lines := m.header()
	if r == nil {
		return append(lines, "", fmt.Sprintf("proxy %s is gone (esc: back)", m.detail))
	}
	header, body := tableLines([]Row{*r}, -1, false, m.frame.fleet())
	lines = append(lines, "", headerStyle.Render(pad(header, m.width)), body[0])
	if r.Problem != "" {
		lines = append(lines, badStyle.Render("failed: "+r.Problem))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n")
	tw := newTabwriter(&b)
	fmt.Fprintln(tw, "OP\tOPS/S\tP50\tP99\tP999\tERRORS\tRESULTS")
	for _, o := range r.ByOp {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", format.OpName(o.Op), rate(r, o.Count),
			latency(o.Latency.Count, o.Latency.P50), latency(o.Latency.Count, o.Latency.P99),
			latency(o.Latency.Count, o.Latency.P999), o.Errors, format.Results(o.Results))
	}
	if len(r.ByOp) == 0 {
		fmt.Fprintln(tw, "(no transactions yet)")
	}
	tw.Flush()
	start := "since the proxy started"
	if !m.frame.Since.IsZero() {
		start = "since " + m.frame.Since.Format(time.TimeOnly) // counted from events
	}
	lat, span := r.Latency, start
	if r.Span == m.frame.Interval && r.Span > 0 {
		span = "over the last " + format.Duration(r.Span.Round(time.Millisecond))
	}
	if lat.Count == 0 && span != start {
		fmt.Fprintf(&b, "\nno transactions %s.", span)
		lat, span = r.SinceStart(), start
	}
	fmt.Fprintf(&b, "\nlatency %s, %d samples:\n", span, lat.Count)
	format.WriteBins(&b, lat.Bins, "  ", max(min(m.width-40, 50), 10))
	return append(lines, strings.Split(strings.TrimRight(b.String(), "\n"), "\n")...)
}

// sessionLines show the hot sessions of the last interval under the
// daemon's summary.
func (m *model) sessionLines() []string {
	lines := m.header()
	switch {
	case m.sessErr != nil:
		return append(lines, "", badStyle.Render("sessions: "+m.sessErr.Error()))
	case m.sess == nil || m.sess.Span() <= 0:
		return append(lines, "", "hot sessions: counting; the first ones show at the next refresh")
	}
	rows := max(m.height-len(lines)-4, 1) // a blank, the summary, the titles, the status line
	summary, header, body := sessionLines(m.sess, rows)
	lines = append(lines, "", summary, headerStyle.Render(pad(header, m.width)))
	if len(body) == 0 {
		return append(lines, dimStyle.Render("(no transactions with a session id)"))
	}
	return append(lines, body...)
}

// status is the bottom line: the filter being typed, or the keys.
func (m *model) status() string {
	switch {
	case m.filtering:
		return "filter: " + m.filter + "█  (enter: keep, esc: clear)"
	case m.showSessions:
		return dimStyle.Render("s (esc) proxies  p pause  q quit  ? keys")
	case m.detail != "":
		return dimStyle.Render("esc back  p pause  q quit  ? keys")
	}
	s := "↑↓ select  enter open  / filter  < > sort  p pause  q quit  ? keys"
	if m.sessSrc != nil {
		s = "↑↓ select  enter open  / filter  < > sort  s sessions  p pause  q quit  ? keys"
	}
	if m.filter != "" {
		s = fmt.Sprintf("filter %q  ", m.filter) + s
	}
	return dimStyle.Render(s)
}

func (m *model) helpLines() []string {
	l := []string{
		titleStyle.Render("snoopctl top: keys"),
		"",
		"  ↑ ↓ j k, PgUp PgDn, g G   select a proxy",
		"  enter (→)                 open the proxy: its operations and latency histogram",
		"  esc (← backspace)         back to the table",
		"  /                         filter by name (enter keeps it, esc clears it)",
		"  < >                       sort by the column to the left or right",
		"  r                         reverse the order",
	}
	for _, c := range columns {
		if c.key != "" {
			l = append(l, fmt.Sprintf("  %-25s sort by %s (again: reverse)", c.key, c.title))
		}
	}
	if m.sessSrc != nil {
		l = append(l, "  s                         the hot sessions: session ids by GETs (again: the proxies)")
	}
	return append(l,
		"  p, space                  pause and resume the refresh",
		"  q, ctrl+c                 quit",
		"  ?                         this help",
		"",
		"Rates and percentiles are over the last refresh interval; the first",
		"screen shows each proxy's life so far (with --from: the time since",
		"the subscription began). Any key closes this help.",
	)
}

// pad fills s with spaces to width, so a reverse-video line spans the
// screen.
func pad(s string, width int) string {
	if w := ansi.StringWidth(s); w < width {
		return s + strings.Repeat(" ", width-w)
	}
	return s
}
