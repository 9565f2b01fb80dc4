# Plots scenario 3 (mass exit) of a proc_bench CSV: median microseconds per
# child from release to all joined, against the number of live children k,
# one line per contender.
#
#   build/bench/proc_bench --csv bench.csv
#   mkdir -p docs && gnuplot bench/plot.gp          # reads bench.csv
#   gnuplot -e "csv='other.csv'; out='/tmp/x.png'" bench/plot.gp
#
# CSV columns: scenario,name,param,contender,metric,unit,median,ratio,n (after
# the machine record's leading "#" lines, which gnuplot skips as comments)

if (!exists("csv")) csv = "bench.csv"
if (!exists("out")) out = "docs/mass_exit.png"

contenders = "raw libproc raw_exec libproc_exec libuv"

set datafile separator ","
set terminal pngcairo size 900,560 noenhanced font ",11"
set output out

set title "proc_bench scenario 3: mass exit, release to all joined"
set xlabel "live children k (log scale)"
set ylabel "median time per child (µs)"
set logscale x
set xrange [30:6000]
set xtics (50, 100, 200, 500, 1000, 2000, 4000)
set yrange [0:*]
set grid
set key top left box opaque

# one fixed colour per contender, in the order of "contenders"
set linetype 1 lc rgb "#000000"
set linetype 2 lc rgb "#d62728"
set linetype 3 lc rgb "#7f7f7f"
set linetype 4 lc rgb "#ff7f0e"
set linetype 5 lc rgb "#1f77b4"

# Rows of other scenarios/metrics and of other contenders become NaN and are
# skipped; "set datafile missing NaN" keeps each contender's line unbroken.
set datafile missing NaN
sel(c) = (strcol(1) eq "3" && strcol(5) eq "per_child" && strcol(4) eq c)

plot for [c in contenders] csv skip 1 \
    using (sel(c) ? $3 : NaN):(sel(c) ? $7 : NaN) \
    with linespoints lw 2 pt 7 ps 1.2 title c

set output
