# bench/plot.gp — the charts of docs/benchmarks.md, drawn for bench/report.py.
#
#   gnuplot -e "chart='bars'; datafile='D'; outfile='O.png'; ttl='T'; ylab='Y'; series='a b c'; nseries=3; ymax=2.5; refline=1" bench/plot.gp
#   gnuplot -e "chart='lines'; datafiles='D1 D2'; ptitles='P1 P2'; ltitles='L1 L2'; nlines=2; ttl='T'; xlab='X'; ylab='Y'; logx=10; ymax=3500; outfile='O.png'" bench/plot.gp
#
# bars:  clustered bars with min–max error bars. DATAFILE: a header line, then one line
#        per group: "label" (may hold \n) then, per series, median low high.
#        REFLINE (optional, > 0): a dashed horizontal line at that value (1 for ratios).
# lines: one panel per DATAFILE (side by side, titled by PTITLES), one line per data
#        block (blocks separated by two blank lines, titled by LTITLES), x on a log scale
#        of base LOGX (0: linear). Titles are single words: '_' is shown as a space.
# YMAX (optional, > 0): the top of the y axis. report.py computes it from the data so that
#        charts (and the panels of one chart) meant to be compared share one y range.
# COLORS (optional): one "#rrggbb" per series or line, so a server keeps its colour.
# XTICS (optional, lines): the x values to label, e.g. '1000 2000 5000 10000'.
# Keys (legends) sit outside the plot area, to its right, where they cannot hide a bar or
# a point (below it they would collide with two-line tick labels and the x label, above
# it with the titles).
# Missing values are written NA.

set terminal pngcairo size 1100,600 font "DejaVu Sans,10" noenhanced
set output outfile
set datafile missing "NA"
set grid ytics lc rgb "#dddddd"
set border 3
set tics nomirror
set key outside right top vertical

if (!exists("colors")) colors = ""
if (!exists("ymax")) ymax = 0
if (!exists("refline")) refline = 0
if (!exists("xtics")) xtics = ""
if (ymax > 0) { set yrange [0:ymax] } else { set yrange [0:*] }
# The colour of series i (1-based): from COLORS, else gnuplot's own sequence.
lc(i) = (words(colors) >= i) ? word(colors, i) : ""
sp(s) = system("echo '" . s . "' | tr _ ' '")

if (chart eq "bars") {
  set title ttl
  set ylabel ylab
  set style data histogram
  set style histogram errorbars gap 2 lw 1
  set style fill solid 0.85 border rgb "#333333"
  set boxwidth 0.9
  set xtics scale 0
  set bmargin 4  # room for two-line cluster labels
  if (refline > 0) {
    set arrow from graph 0, first refline to graph 1, first refline nohead dt 2 lw 1.5 \
      lc rgb "#555555" back
  }
  plot for [i=0:nseries-1] datafile using (column(2+3*i)):(column(3+3*i)):(column(4+3*i)):xtic(1) \
    title word(series, i+1) lc rgb (lc(i+1) eq "" ? "#4c72b0" : lc(i+1))
}

if (chart eq "lines") {
  npanels = words(datafiles)
  set multiplot layout 1, npanels title ttl
  if (logx > 0) { set logscale x logx }
  if (words(xtics) > 0) {
    set xtics ()
    do for [i=1:words(xtics)] { set xtics add (word(xtics, i) word(xtics, i) + 0) }
  }
  set autoscale xfix
  set offsets graph 0.04, graph 0.04, 0, 0
  set xlabel xlab
  set ylabel ylab
  # Every panel has the same lines, so the same key: its width is the same in each
  # panel and the plot areas stay aligned.
  do for [p=1:npanels] {
    set title sp(word(ptitles, p))
    if (words(colors) >= nlines) {
      plot for [i=0:nlines-1] word(datafiles, p) index i using 1:2 with linespoints lw 2 pt 7 \
        ps 0.8 lc rgb word(colors, i+1) title sp(word(ltitles, i+1))
    } else {
      plot for [i=0:nlines-1] word(datafiles, p) index i using 1:2 with linespoints lw 2 pt 7 \
        ps 0.8 title sp(word(ltitles, i+1))
    }
  }
  unset multiplot
}
