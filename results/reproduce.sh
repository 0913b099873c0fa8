#!/usr/bin/env bash
# Regenerates everything under results/ (the toy and the reference study):
#
#   bash results/reproduce.sh            # all stages, ~2 h on 2 CPU cores
#   bash results/reproduce.sh toy        # one stage: estimators | toy | tune | digits | strategies | tables
#   bash results/reproduce.sh backbone   # the shared-backbone study -> results/backbone/ (opt-in, ~1 h)
#   bash results/reproduce.sh mnist5k    # the DisARM VAEs on mnist5k -> results/mnist5k/ (opt-in)
#   bash results/reproduce.sh fashion_binary  # the DisARM VAEs on full Fashion-MNIST, tuned, 50,000 steps
#                                        -> results/fashion_binary/ (opt-in; FASHION_* variables below)
#   bash results/reproduce.sh reinmax    # the ReinMax paper's 8x4 categorical VAE on mnist5k -> results/reinmax/ (opt-in)
#   bash results/reproduce.sh conditioning  # conv vs MLP conditioning types -> results/conditioning/ (opt-in, ~1 h)
#   bash results/reproduce.sh fashion    # the tutorial's class-conditional ResNet VAE on Fashion-MNIST,
#                                        spatial_concat vs adaln -> results/fashion_cvae/ (opt-in; CVAE_* below)
#
# Runs go to the MLflow store results/.store/mlflow.db (not committed; set
# MLFLOW_TRACKING_URI to use another store), experiments `toy`, `reference`
# and `reference-tuning`; Optuna studies to results/.work/optuna.db. Both
# resume: a finished config is skipped (config_hash), a study runs only its
# missing trials. Only the generated tables and figures are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/.store results/.work
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/results/.store/mlflow.db}"
PAR="hydra/launcher=joblib hydra.launcher.n_jobs=${N_JOBS:-2}"
ESTIMATORS="exact reinforce gumbel rebar relax vimco"
GAUSSIAN="reparam reinforce_gaussian"   # digits only: the continuous-latent counterpart
GRID="kl=constant,cyclical kl.free_bits=0.0,0.5 seed=0,1,2"
stages="${*:-estimators toy tune digits strategies tables}"
has() { [[ " $stages " == *" $1 "* ]]; }
run() { echo "+ python -m bench.run -m $*" >&2; python -m bench.run -m "$@"; }

if has estimators; then  # fixed problems, no store: ~1 min
  python results/estimator_bias.py        # results/estimator_bias.md, .csv
  python -m results.toy_muprop            # the MuProp table in results/README.md
fi

if has toy; then  # 12 variants x t in {0.45, 0.499} x 3 seeds = 72 runs
  T="experiment=toy_variance task.t=0.45,0.499 seed=0,1,2 $PAR"
  run $T estimator=reinforce estimator.baseline=none,ema estimator.n_samples=1 \
      hydra.sweep.dir=results/.work/toy-reinforce
  run $T estimator=reinforce estimator.baseline=loo estimator.n_samples=2 \
      hydra.sweep.dir=results/.work/toy-loo
  run $T estimator=rebar,relax,gumbel hydra.sweep.dir=results/.work/toy-relaxed
  run $T estimator=rebar estimator.relaxation=muprop hydra.sweep.dir=results/.work/toy-muprop
  run $T estimator=disarm,indecater,st,reinmax,gumbel_rao hydra.sweep.dir=results/.work/toy-new
fi

# Fair tuning (docs/tuning.md): per task, one Optuna study per estimator,
# 4 trials each (TPE, seed 0), train.lr in [1e-4, 3e-2] log, estimator.tau in
# [0.1, 2] for gumbel/rebar/relax; at concat, constant KL, no free bits, seed 0,
# and fewer steps than the study (digits 500 of 1000, strategies 100 of 150).
# Objective: the final val/elbo of the tuning run. With 4 trials (< TPE's 10
# start-up trials) every study draws the same 4 seeded random points.
tune() {  # task, steps, estimators
  local est="$3"
  run experiment=reference_$1 hparams_search=lr "estimator=${est// /,}" \
      conditioning=concat kl=constant kl.free_bits=0.0 seed=0 train.steps=$2 \
      mlflow.experiment=reference-tuning hydra.sweeper.n_trials=4 hydra.sweeper.n_jobs=2 \
      hydra.sweeper.study_prefix=lr-$1 hydra.sweeper.storage=sqlite:///results/.work/optuna.db \
      hydra.sweep.dir=results/.work/tune-$1 $PAR
}
if has tune; then
  tune digits 500 "$ESTIMATORS $GAUSSIAN"
  tune strategies 100 "$ESTIMATORS"
fi

study() {  # task, conditioning list, estimators
  for e in $3; do
    best=$(python -m bench.results.study best results/.work/tune-$1/best.yaml "$e")
    grid="$GRID"
    [[ $e == vimco ]] && grid="${GRID/kl.free_bits=0.0,0.5/kl.free_bits=0.0}"  # vimco refuses free bits
    run experiment=reference_$1 estimator=$e $best conditioning=$2 $grid $PAR \
        hydra.sweep.dir=results/.work/study-$1-$e
  done
}
has digits && study digits concat,add,film "$ESTIMATORS $GAUSSIAN"
has strategies && study strategies concat,prefix,film,xattn,add "$ESTIMATORS"

# RELAX as in Grathwohl et al.'s VAE experiments: REBAR's f term plus the
# network (estimator.use_f=true; the default, use_f=false, is the network
# alone). It reuses relax's tuned train.lr and tau, not retuned; the tables
# label the two relax(use_f=False) and relax(use_f=True).
relax_f() {  # task, conditioning list
  local best
  best=$(python -m bench.results.study best results/.work/tune-$1/best.yaml relax)
  run experiment=reference_$1 estimator=relax estimator.use_f=true $best conditioning=$2 $GRID \
      $PAR hydra.sweep.dir=results/.work/study-$1-relax-f
}
has digits && relax_f digits concat,add,film
has strategies && relax_f strategies concat,prefix,film,xattn,add

if has backbone; then  # opt-in (not in the default stages): 84 runs of 300 steps + one pretrain
  BASE="$PWD/results/.work/backbone-base.pt"
  python -m bench.pretrain task=strategies model.d_model=64 model.n_layers=2 train.steps=2000 \
      train.eval_every=500 train.log_every=100 seed=0 --out "$BASE"
  G="experiment=backbone_study conditioning=prefix,film seed=0,1,2 $PAR"
  S="model.backbone=shared model.backbone_mode=frozen,lora,full model.base=$BASE"
  run $G estimator=gumbel,rebar hydra.sweep.dir=results/.work/backbone-sep-cat
  run $G latent=gaussian estimator=reparam hydra.sweep.dir=results/.work/backbone-sep-gauss
  run $G estimator=gumbel,rebar $S hydra.sweep.dir=results/.work/backbone-shared-cat
  run $G latent=gaussian estimator=reparam $S hydra.sweep.dir=results/.work/backbone-shared-gauss
  # gumbel under film, the cell where the modes' NMI differ most but within the
  # 3-seed intervals: 3 seeds more for each backbone setting
  M="experiment=backbone_study conditioning=film estimator=gumbel seed=3,4,5 $PAR"
  run $M hydra.sweep.dir=results/.work/backbone-sep-more
  run $M $S hydra.sweep.dir=results/.work/backbone-shared-more
  python -m bench.tables --experiment backbone_study --out results/backbone
  python results/backbone_modes.py        # results/backbone/modes.md: settings paired on seeds
fi

# The binary-VAE estimators at the papers' settings (conf/experiment/disarm_linear.yaml
# says where each number comes from): RELAX as DisARM's RELAX baseline, REBAR as
# REBAR's official code, REINFORCE-LOO, VIMCO, ARMS and CARMS with 2 samples (the
# 2 evaluations of f of a DisARM pair); the others as built.
RELAX_PAPER="estimator=relax estimator.use_f=true estimator.eta_scales_net=true estimator.net_input=perturbed estimator.hidden=137 estimator.layers=1 estimator.activation=leaky_relu estimator.tau=0.1 estimator.eta=1.0 model.context=input train.estimator_beta1=0.999"
REBAR_PAPER="estimator=rebar estimator.relaxation=muprop estimator.eta_bound=true"
binary() {  # experiment, seeds, extra overrides (steps, task, ...), sweep folder stem
  run experiment=$1 seed=$2 $3 $PAR estimator=disarm,gumbel,st,reinmax,gumbel_rao,gst,decoupled_st hydra.sweep.dir=$4
  run experiment=$1 seed=$2 $3 $PAR estimator=reinforce,vimco,arms,carms,unordered_set,double_cv ++estimator.n_samples=2 hydra.sweep.dir=$4-multi
  run experiment=$1 seed=$2 $3 $PAR $RELAX_PAPER hydra.sweep.dir=$4-relax
  run experiment=$1 seed=$2 $3 $PAR $REBAR_PAPER hydra.sweep.dir=$4-rebar
}

if has mnist5k; then  # opt-in: the DisARM binary VAEs on mnist5k at a CPU budget
  # every estimator that takes 200 Bernoulli latents; seeds 0-2 first, then
  # 3-4, so a partial run covers every cell. indecater evaluates f 400 times per
  # step (~80x gumbel's step time at this size), so it gets the f-evaluations of
  # the 2-evaluation estimators' whole run instead of their steps: 10 steps
  STEPS="train.steps=${MNIST5K_STEPS:-2000} train.eval_every=1000 train.log_every=100"
  for seeds in ${MNIST5K_SEEDS:-0,1,2 3,4}; do
    for m in disarm_linear disarm_nonlinear; do
      binary $m $seeds "$STEPS" results/.work/$m-${seeds//,/}
      run experiment=$m seed=$seeds train.f_evals=$((2 * ${MNIST5K_STEPS:-2000})) train.eval_every=1000 \
          train.log_every=5 $PAR estimator=indecater hydra.sweep.dir=results/.work/$m-${seeds//,/}-indecater
    done
  done
  python -m bench.tables --experiment disarm --out results/mnist5k
fi

if has fashion_binary; then  # opt-in: DisARM's binary VAEs on full Fashion-MNIST (Debian's dataset-fashion-mnist)
  # 1. Tuning at equal budget: per model and estimator one Optuna study (conf/hparams_search/
  #    lr_binary.yaml: TPE, seed 0, FASHION_TRIALS trials, train.lr log-uniform in [1e-5, 1e-3],
  #    estimator.tau in [0.1, 2] where there is one), each trial FASHION_TUNE_STEPS steps, scored by
  #    the final val/elbo on 5,000 training images held out (task.val_size=5000 eval.split=val).
  # 2. The study: each estimator at its tuned values, FASHION_STEPS steps, 6 evaluations (every
  #    FASHION_STEPS / 5: each ~4 s at the 100-sample bound on 10,000 images, so evaluation stays
  #    under 10% of a run; every / 10 took 8.5-11.9%), seeds in pairs (two
  #    jobs at once), the held-out bound on the 10,000 test images, trainset/elbo on 10,000
  #    training images; mlflow experiment disarm-fashion. Both steps resume.
  FM="task=fashion_mnist"
  TS=${FASHION_TUNE_STEPS:-3000}
  TUNE="$FM task.val_size=5000 eval.split=val eval.batch_size=5000 eval.iwae_samples=1 eval.grad_stats=false eval.train_elbo_size=0 train.steps=$TS train.eval_every=$TS train.log_every=500 seed=0 mlflow.experiment=disarm-fashion-tuning"
  VARIANTS="disarm gumbel reinforce vimco relax rebar arms carms unordered_set double_cv gst decoupled_st"
  variant() {  # the estimator overrides of a variant of VARIANTS
    case $1 in
      reinforce|vimco|arms|carms|unordered_set|double_cv) echo "estimator=$1 estimator.n_samples=2" ;;
      relax) echo "$RELAX_PAPER" ;;
      rebar) echo "$REBAR_PAPER" ;;
      *) echo "estimator=$1" ;;
    esac
  }
  for m in ${FASHION_MODELS:-disarm_linear disarm_nonlinear}; do
    for v in $VARIANTS; do
      run experiment=$m hparams_search=lr_binary $TUNE $(variant $v) $PAR \
          hydra.sweeper.n_trials=${FASHION_TRIALS:-4} hydra.sweeper.study_prefix=fashion-$m-$v \
          hydra.sweeper.storage=sqlite:///results/.work/optuna.db hydra.sweep.dir=results/.work/tune-fashion-$m-$v
    done
  done
  python -m bench.results.study trials --storage sqlite:///results/.work/optuna.db --prefix fashion- \
      --out results/fashion_binary/tuning_trials.md
  FS=${FASHION_STEPS:-50000}
  for seeds in ${FASHION_SEEDS-0,1 2,3 4}; do     # FASHION_SEEDS="" tunes only
    for m in ${FASHION_MODELS:-disarm_linear disarm_nonlinear}; do
      for v in $VARIANTS; do
        est=$(variant $v); est=${est%% *}; est=${est#estimator=}
        best=$(python -m bench.results.study best results/.work/tune-fashion-$m-$v/best.yaml $est)
        run experiment=$m $FM seed=$seeds train.steps=$FS train.eval_every=$((FS / 5)) train.log_every=500 \
            train.checkpoint_every=5000 $(variant $v) $best mlflow.experiment=disarm-fashion $PAR \
            hydra.sweep.dir=results/.work/fashion-$m-$v-${seeds//,/}
      done
    done
  done
  if [[ -n "${FASHION_SEEDS-x}" ]]; then
    python -m bench.tables --experiment disarm-fashion --out results/fashion_binary
    python -m bench.results.study used --experiment disarm-fashion --out results/fashion_binary/tuned_used.md \
        --tuning results/.work/tune-fashion-*/best.yaml
  fi
fi

if has reinmax; then  # opt-in: the ReinMax 8x4 VAE, each estimator at the lr and tau of the paper's appendix
  # table (conf/experiment/reinmax_vae.yaml), 5 seeds, at a CPU budget of steps
  R="experiment=reinmax_vae seed=0,1,2,3,4 train.steps=${REINMAX_STEPS:-2000} train.eval_every=1000 train.log_every=100 $PAR"
  run $R estimator=reinmax estimator.tau=1.3 train.lr=5e-4 hydra.sweep.dir=results/.work/reinmax-reinmax
  run $R estimator=st estimator.tau=1.3 train.lr=1e-3 hydra.sweep.dir=results/.work/reinmax-st
  run $R estimator=gumbel estimator.hard=true estimator.tau=0.5 train.lr=3e-4 hydra.sweep.dir=results/.work/reinmax-stgs
  run $R estimator=gumbel_rao estimator.tau=0.5 train.lr=5e-4 hydra.sweep.dir=results/.work/reinmax-grmck
  # not in the paper's table: its default lr, the estimators' own defaults. The
  # multi-sample ones: CARMS (4 samples) and categorical DisARM (2 pairs) at 2,000 steps
  # (4 evaluations of f each); unordered_set and double_cv (2 samples) at the single-sample
  # runs' f-evaluations; budget.md compares all at equal f-evaluations
  run $R '~estimator.tau' estimator=carms estimator.n_samples=4 train.lr=5e-4 hydra.sweep.dir=results/.work/reinmax-carms
  run $R '~estimator.tau' estimator=disarm estimator.n_pairs=2 train.lr=5e-4 hydra.sweep.dir=results/.work/reinmax-disarm
  run $R estimator=gst estimator.tau=1.0 train.lr=5e-4 hydra.sweep.dir=results/.work/reinmax-gst
  run $R estimator=decoupled_st '~estimator.tau' train.lr=5e-4 hydra.sweep.dir=results/.work/reinmax-decoupled_st
  run $R estimator=unordered_set,double_cv '~estimator.tau' estimator.n_samples=2 train.lr=5e-4 \
      train.f_evals=${REINMAX_STEPS:-2000} hydra.sweep.dir=results/.work/reinmax-multi
  python -m bench.tables --experiment reinmax_vae --out results/reinmax
fi

if has conditioning; then  # opt-in: 90 runs, conv x {spatial_concat, adaln} vs mlp x {concat, add, film}
  # latent sizes of the conv model's spatial latent (digits 2x2, mnist5k 7x7),
  # given to both families: categorical one K-way variable per position,
  # Gaussian 4 channels per position
  C="experiment=conditioning_study seed=0,1,2 $PAR"
  MNIST="task=mnist5k train.steps=400 train.eval_every=200 eval.batch_size=256 eval.iwae_samples=8 eval.grad_samples=8"
  for t in digits mnist5k; do
    if [[ $t == digits ]]; then T="latent.K=4"; CAT=4; GAU=16; else T="$MNIST latent.K=10"; CAT=49; GAU=196; fi
    for fam in "model.family=conv conditioning=spatial_concat,adaln" "model.family=mlp conditioning=concat,add,film"; do
      tag=${fam%% *}; tag=${tag#model.family=}
      run $C $T $fam latent=gaussian latent.D=$GAU estimator=reparam hydra.sweep.dir=results/.work/cond-$t-$tag-gauss
      run $C $T $fam latent.D=$CAT estimator=reinforce,rebar hydra.sweep.dir=results/.work/cond-$t-$tag-cat
    done
  done
  python -m bench.tables --experiment conditioning_study --out results/conditioning
fi

if has fashion; then  # opt-in: experiment=cvae_fashion (the tutorial's model) x {spatial_concat, adaln};
  # Gaussian latent with reparam, and the categorical latent (49 positions x K=10) with reinforce
  # (leave-one-out, 4 samples) and rebar, the two sampling estimators ahead in the reference study;
  # CVAE_SEEDS (3). One step of this model costs ~5-20 s of CPU at batch 256 (results/fashion_cvae/
  # README.md), so a run is CVAE_STEPS steps (default 400, ~1.7 epochs), not the tutorial's 100
  # epochs; two evaluations (step 0 and the end, the final one with the pictures) on the first
  # CVAE_EVAL test images, without gradient statistics (the study reports bounds, adherence,
  # KL and active units): one evaluation of 1,000 images costs ~15-60 training steps, so more would
  # take over 10% of so short a run. Resumes: finished configs are skipped, a run
  # checkpoints every CVAE_STEPS / 4 steps.
  CS=${CVAE_STEPS:-400}
  CV="experiment=cvae_fashion conditioning=spatial_concat,adaln seed=${CVAE_SEEDS:-0,1,2} train.steps=$CS \
      train.eval_every=$CS eval.grad_stats=false train.log_every=$((CS / 20 > 0 ? CS / 20 : 1)) train.checkpoint_every=$((CS / 4 > 0 ? CS / 4 : 1)) \
      eval.batch_size=${CVAE_EVAL:-1000} $PAR"
  run $CV hydra.sweep.dir=results/.work/cvae-fashion-gauss
  run $CV latent=categorical latent.D=49 latent.K=10 estimator=${CVAE_DISCRETE:-reinforce,rebar} \
      hydra.sweep.dir=results/.work/cvae-fashion-cat
  python -m bench.tables --experiment cvae_fashion --out results/fashion_cvae
fi

if has tables; then
  python -m bench.tables --experiment toy --out results/toy
  python -m bench.results.study curve --experiment toy --key grad/log10_var --out results/toy
  python -m bench.tables --experiment reference --out results/reference
  python -m bench.results.study summary --out results/reference \
      --tuning results/.work/tune-digits/best.yaml results/.work/tune-strategies/best.yaml
fi
